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
from harness.ratings import RatingStore
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
        revealed += [t for t in (x.value for x in at.text) if t.startswith("That was")]
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
    assert all(f"That was the output of {CANDIDATES[1]}" in r or "calibration item" in r for r in ada + bob + cy)

    scores = store.scores("run-1")
    per_item = Counter((s.example_id, s.candidate) for s in scores)
    assert len(per_item) == 4 and set(per_item.values()) == {2}, per_item
    assert sum("calibration" in r for r in ada + bob + cy) == 3, "every reviewer met the gold item once"
    assert {s.candidate for s in scores} == {CANDIDATES[1]}

    progress = _cli("progress", own_results / "run-1")
    assert "4 of 4 items complete (overlap 2)" in progress.stdout
    assert "bob\t" in progress.stdout and "FLAGGED" in progress.stdout.split("bob\t")[1].splitlines()[0]

    verdicts, _ = gate(own_results / "run-1")
    human = next(v for v in verdicts if v.metric == "human_rating")
    assert "left out: bob's ratings (right on 0 of 1 gold items" in human.evidence
    assert human.n == 4 and human.observed == pytest.approx((4 + 3 + 3) / 3), "only ada's and cy's ratings count"

    at = app(own_results, monkeypatch, "Review", token=root)
    table = next(df.value for df in at.dataframe if "gold right" in df.value.columns).set_index("reviewer")
    assert bool(table.loc["bob", "flagged"]) and not bool(table.loc["ada", "flagged"])
    items = next(df.value for df in at.dataframe if "held now" in df.value.columns)
    assert items[~items.gold].ratings.tolist() == [2, 2, 2, 2]

    at = app(own_results, monkeypatch, "Agreement", token=root)
    assert "Review plan" in texts(at)
    alpha = next(df.value for df in at.dataframe if "reviewers counted" in df.value.columns)
    everyone = alpha[alpha["reviewers counted"] == "everyone"].set_index("what")
    assert set(everyone.statistic) == {"Krippendorff's alpha (ordinal)"}
    assert everyone.loc["accuracy", "items"] == 4 and everyone.loc["accuracy", "reviewers"] == 3
    assert everyone.loc["accuracy", "value"] < 0.5, "bob's 5s against the others' 4s: poor agreement"


def test_a_bad_plan_is_one_line_naming_the_field(own_results, tmp_path):  # noqa: F811
    for changes, field in (({"overlap": 0}, "overlap"), ({"tasks": ["nope"]}, "tasks.0"),
                           ({"gold": [{"task": "qa", "example_id": "missing", "answer": "x", "accuracy": 1}]},
                            "gold.0.example_id"),
                           ({"gold": [{"task": "qa", "example_id": "x", "better": "a", "worse": "b"}]}, "gold")):
        made = _cli("plan", own_results / "run-1", _plan_file(tmp_path, own_results, **changes))
        assert made.returncode == 2, made.stderr
        assert len(made.stderr.strip().splitlines()) == 1 and f"review.yaml: {field}" in made.stderr, made.stderr
    assert Assignments(RatingStore.beside(own_results)).plan("run-1") is None, "nothing registered"
