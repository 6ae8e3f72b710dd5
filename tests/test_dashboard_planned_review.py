"""A review plan worked through on the Review page (AppTest, the real ratings database): the plan picks each
reviewer's items, each ends with exactly `overlap` reviewers, names stay hidden until saved, the rubric stands
beside the item, the gold item flags a careless reviewer, whom the gate leaves out and says so; the admin's
tables, the Agreement page's alpha and the `harness reviewers plan|progress` commands on the same plan."""

import json
import subprocess
import sys
from collections import Counter

import pytest
import yaml

from harness.assignments import Assignments
from harness.ratings import Output, RatingStore
from harness.review_plan import SCORES_RUBRIC
from tests.test_dashboard import CANDIDATES, app, own_results, results, texts  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow
PLANTED = "The capital of every country is Paris, always."


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "harness.cli", "reviewers", *map(str, args)], capture_output=True,
                          text=True, timeout=300)


def _plan_file(tmp_path, folder, **changes):
    ids = [json.loads(line)["example_id"] for line in
           (folder / "run-1" / "predictions" / CANDIDATES[1] / "qa.jsonl").read_text().splitlines()]
    plan = {"mode": "scores", "overlap": 2, "tasks": ["qa"], "candidates": [CANDIDATES[1]], "items": 4,
            "gold": [{"task": "qa", "example_id": ids[0], "answer": PLANTED, "accuracy": 1}], **changes}
    path = tmp_path / "review.yaml"
    path.write_text(yaml.safe_dump(plan))
    return path


def _work(folder, monkeypatch, token, score, stop_after=None) -> list[str]:
    """A reviewer rates the items the plan gives them (`score(gold)`: their factual accuracy for an item) until it
    has none left for them (or `stop_after` saves), checking that no candidate name shows before saving; returns
    what each save revealed."""
    at = app(folder, monkeypatch, "Review", token=token)
    revealed: list[str] = []
    for _ in range(20):
        if stop_after is not None and len(revealed) == stop_after:
            return revealed
        if any("Nothing is left for you" in s.value for s in at.success):
            return revealed
        shown = [t.value for t in at.text]
        assert SCORES_RUBRIC in shown, "the rubric stands beside the item"
        page = texts(at)
        for message in revealed[-1:]:  # the last save's own message, above the next item
            page = page.replace(message, "")
        assert not any(name in page for name in CANDIDATES), "a candidate's name shown before saving"
        at.slider(key="rate_accuracy").set_value(score(PLANTED in shown))
        next(b for b in at.button if b.label == "Save rating").click().run()
        assert not at.exception, at.exception
        revealed += [t for t in (x.value for x in at.text) if t.startswith("Your rating of example")]
    pytest.fail("the plan never ran out")


def test_a_review_plan_worked_through_on_the_page(own_results, monkeypatch, tmp_path):  # noqa: F811
    from harness.evaluation import gate

    store = RatingStore.beside(own_results)
    tokens = {name: store.add_reviewer(name) for name in ("ada", "bob", "cy")}
    root = store.add_reviewer("root", role="admin")
    made = _cli("plan", own_results / "run-1", _plan_file(tmp_path, own_results))
    assert made.returncode == 0, made.stderr
    assert "4 items × overlap 2 = 8 ratings, plus 1 gold items" in made.stdout

    careful = lambda gold: 1 if gold else 4  # noqa: E731
    ada = _work(own_results, monkeypatch, tokens["ada"], careful, stop_after=2)
    bob = _work(own_results, monkeypatch, tokens["bob"], lambda gold: 5)
    cy = _work(own_results, monkeypatch, tokens["cy"], careful)
    ada += _work(own_results, monkeypatch, tokens["ada"], careful)
    scores = store.scores("run-1")
    by_bob = [s for s in scores if s.reviewer == "bob"]
    assert len(ada + bob + cy) == 4 * 2 + 3 + len(by_bob), \
        "each item twice by the careful reviewers, the gold item once per reviewer, and bob's before his flag"
    per_item = Counter((s.example_id, s.candidate) for s in scores if s.reviewer != "bob")
    assert len(per_item) == 4 and set(per_item.values()) == {2}, per_item
    assert [(g.reviewer, g.rated) for g in Assignments(store).progress("run-1", {}).gold] == [
        ("ada", 1), ("bob", 1), ("cy", 1)], "every reviewer met the gold item once"
    assert {s.candidate for s in scores} == {CANDIDATES[1]}

    progress = _cli("progress", own_results / "run-1")
    assert "4 of 4 items complete (overlap 2)" in progress.stdout
    assert "bob\t" in progress.stdout and "FLAGGED" in progress.stdout.split("bob\t")[1].splitlines()[0]

    verdicts, _ = gate(own_results / "run-1")
    human = next(v for v in verdicts if v.metric == "human_rating")
    assert "left out: bob's ratings (right on 0 of 1 gold items" in human.evidence
    assert human.n == 4 and human.observed == pytest.approx((4 + 3 + 3) / 3), "only ada's and cy's ratings count"

    at = app(own_results, monkeypatch, "Review", token=root)
    assert not any("gold" in df.value.columns for df in at.dataframe), "no plan table beside an admin's item"
    at = app(own_results, monkeypatch, "Agreement", token=root)
    assert "Review plan" in texts(at)
    table = next(df.value for df in at.dataframe if "gold right" in df.value.columns).set_index("reviewer")
    assert bool(table.loc["bob", "flagged"]) and not bool(table.loc["ada", "flagged"])
    items = next(df.value for df in at.dataframe if "held now" in df.value.columns)
    assert items[~items.gold].ratings.tolist() == [2, 2, 2, 2], "bob's places went to the careful reviewers"
    alpha = next(df.value for df in at.dataframe if "reviewers counted" in df.value.columns)
    everyone = alpha[alpha["reviewers counted"] == "everyone"].set_index("what")
    assert set(everyone.statistic) == {"Krippendorff's alpha (ordinal)"}
    assert everyone.loc["accuracy", "items"] == 4 and everyone.loc["accuracy", "reviewers"] == 3
    assert everyone.loc["accuracy", "value"] < 0.5, "bob's 5s against the others' 4s: poor agreement"


def test_a_bad_plan_is_one_line_naming_the_field(own_results, tmp_path):  # noqa: F811
    for changes, field in (({"overlap": 0}, "overlap"), ({"tasks": ["nope"]}, "tasks.0"),
                           ({"gold": [{"task": "qa", "example_id": "missing", "answer": "x", "accuracy": 1}]},
                            "gold.0.example_id"),
                           ({"gold": [{"task": "qa", "example_id": "x", "better": "a", "worse": "b"}]}, "gold.0"),
                           ({"tasks": ["qa", "qa"]}, "tasks"), ({"candidates": []}, "candidates"),
                           ({"candidates": ["nobody"]}, "candidates.0"), ({"overlap": "many"}, "overlap"),
                           ({"surprise": 1}, "surprise")):
        made = _cli("plan", own_results / "run-1", _plan_file(tmp_path, own_results, **changes))
        assert made.returncode == 2, made.stderr
        assert len(made.stderr.strip().splitlines()) == 1 and f"review.yaml: {field}" in made.stderr, made.stderr
    assert Assignments(RatingStore.beside(own_results)).plan("run-1") is None, "nothing registered"


def test_a_save_of_an_item_gone_meanwhile_saves_nothing(own_results, monkeypatch, tmp_path):  # noqa: F811
    """ada's item is taken from her while her form is open (her hold ran out, bob rated it): her save must not
    land on the item the page shows next."""
    from harness.ratings import Score, answer_sha256
    from harness.review_plan import ReviewItem
    from harness.reviewing import answers_of_run
    from harness.store import RunDir

    store = RatingStore.beside(own_results)
    ada = store.add_reviewer("ada")
    assert _cli("plan", own_results / "run-1", _plan_file(tmp_path, own_results, overlap=1, gold=[])).returncode == 0
    at = app(own_results, monkeypatch, "Review", token=ada)
    assignments = Assignments(store)
    with store.connect() as db:
        key, = db.execute("SELECT key FROM claims WHERE reviewer = 'ada'").fetchone()
        others = {k for k, in db.execute("SELECT key FROM review_items WHERE key != ?", (key,))}
        db.execute("DELETE FROM claims")  # the hold ran out
    task, example_id, cand, _ = key.split("\x1f")
    item = ReviewItem(task, example_id, (cand,))
    answers = answers_of_run(RunDir(own_results / "run-1"))
    digests = {k: answer_sha256(v) for k, v in answers.items()}
    assert assignments.next_item("run-1", "bob", digests, skipped=others) == item
    assignments.save_score(item, Score("run-1", task, example_id, cand, "bob", 5, 5, 5,
                                       answer_sha256=digests[Output(task, example_id, cand)]))
    at.slider(key="rate_accuracy").set_value(1)
    next(b for b in at.button if b.label == "Save rating").click().run()
    assert not at.exception, at.exception
    assert any("Nothing was saved" in w.value for w in at.warning)
    assert [(s.reviewer, s.example_id) for s in store.scores("run-1")] == [("bob", example_id)]


def test_a_blind_plan_on_the_page(own_results, monkeypatch, tmp_path):  # noqa: F811
    """Side by side: no name on the page (before saving, nor after, in a plan), the side chosen stored as the
    candidate whose answer was shown there, and the gold pair judged by the side its better answer was on."""
    from harness.reviewing import answers_of_run
    from harness.store import RunDir

    store = RatingStore.beside(own_results)
    ada = store.add_reviewer("ada")
    better, worse = "Parcel 1 left on Tuesday, as the passage says.", "Bananas are yellow."
    ids = sorted({o.example_id for o in answers_of_run(RunDir(own_results / "run-1")) if o.task == "qa"})
    made = _cli("plan", own_results / "run-1", _plan_file(
        tmp_path, own_results, mode="blind", candidates=None, items=3, overlap=1,
        gold=[{"task": "qa", "example_id": ids[0], "better": better, "worse": worse}]))
    assert made.returncode == 0, made.stderr
    answers = answers_of_run(RunDir(own_results / "run-1"))
    at = app(own_results, monkeypatch, "Review", token=ada)
    for _ in range(4):
        assert not any(name in texts(at) for name in CANDIDATES), "a candidate's name on a blind plan's page"
        with store.connect() as db:
            (key,) = db.execute("SELECT key FROM claims WHERE reviewer = 'ada'").fetchone()
        task, example_id, *rest = key.split("\x1f")
        shown = [t.value for t in at.text]
        if len(rest) == 1:  # the gold pair: choose the side its better answer is on
            side = "Output 1" if shown.index(better) < shown.index(worse) else "Output 2"
        else:  # a real pair: always the left one, which must be stored as the candidate shown on the left
            side, (a, b) = "Output 1", rest[:2]
            text_a, text_b = answers[Output(task, example_id, a)], answers[Output(task, example_id, b)]
            left = a if shown.index(text_a) <= shown.index(text_b) else b
        at.radio(key="blind_choice").set_value(side)
        next(btn for btn in at.button if btn.label == "Save preference").click().run()
        assert not at.exception, at.exception
        if len(rest) > 1:
            (saved,) = [p for p in store.preferences("run-1") if p.example_id == example_id]
            winner = saved.candidate_a if saved.preferred == "A" else saved.candidate_b
            assert answers[Output(task, example_id, winner)] == answers[Output(task, example_id, left)]
    assert any("Nothing is left for you" in s.value for s in at.success)
    assert len(store.preferences("run-1")) == 3
    (record,) = Assignments(store).progress("run-1", {}).gold
    assert (record.rated, record.right) == (1, 1), "the better gold answer was picked, on whichever side"


def test_a_plan_draws_no_failed_request(own_results, tmp_path):  # noqa: F811
    """A failed request has no answer to rate: a plan's items leave it out (a rating criterion is insufficient
    on any failure, so a rating of it would be wasted)."""
    from harness.reviewing import plan_review

    path = own_results / "run-1" / "predictions" / CANDIDATES[1] / "qa.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    failed = {r["example_id"] for r in rows[:4]}
    path.write_text("".join(json.dumps({**r, "text": "", "error": "HTTP 503"} if r["example_id"] in failed else r)
                            + "\n" for r in rows))
    progress = plan_review(own_results / "run-1", _plan_file(tmp_path, own_results, items=None, gold=[]))
    drawn = {p.item.example_id for p in progress.items}
    assert drawn == {r["example_id"] for r in rows} - failed and len(drawn) == len(rows) - 4
