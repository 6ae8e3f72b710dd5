"""Labelling answers for corrected metrics on the Review page (AppTest, the real ratings database): the harness's
seeded order, labels stored with their value, answer hash and reviewer, no candidate's name on the page, one
reviewer per answer, no save landing on an answer other than the one shown, a rewritten answer back in the queue,
and a judge's rubric and an answer with Markdown in them shown as plain text."""

import pytest
import yaml

from harness.labels import LabelStore, label_order, label_queue
from harness.ratings import Output, RatingStore, answer_sha256
from harness.reviewing import answers_of_run
from harness.store import RunDir
from tests.conftest import qa_task, write_yaml
from tests.fake_openai_server import FakeServer
from tests.test_dashboard import CANDIDATES, _rewrite_answer, app, own_results, results, texts  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow
METRIC = "hallucination_rate"
QUESTION = "Is every claim of this answer supported by the passage?"
VALUES = {"Yes": 0.0, "No": 1.0, "Cannot tell": None}


def _labelling(folder, monkeypatch, token=None, name=None):
    """The Review page in labelling mode, opened with a sign-in link's token (or a typed name)."""
    at = app(folder, monkeypatch, "Review", token=token)
    if name is not None:
        at.text_input(key="reviewer").set_value(name).run()
    at.radio(key="rev_activity").set_value("Label answers for corrected metrics").run()
    assert not at.exception, at.exception
    return at


def _held(store: RatingStore, reviewer: str) -> Output | None:
    """The answer the reviewer holds, as the database says (two candidates' answers may read the same)."""
    with store.connect() as db:
        row = db.execute("SELECT task, example_id, candidate FROM label_holds WHERE reviewer = ?",
                         (reviewer,)).fetchone()
    return None if row is None else Output(*row)


def _save(at, choice: str) -> None:
    at.radio(key="label_choice").set_value(choice)
    next(b for b in at.button if b.label == "Save label").click().run()
    assert not at.exception, at.exception


def _shown(at) -> list[str]:
    return [t.value for t in at.text]


def _run(folder):
    answers = answers_of_run(RunDir(folder / "run-1"))
    return answers, sorted({o.example_id for o in answers if o.task == "qa"})


def test_a_reviewer_labels_down_the_seeded_order_without_seeing_whose_answer(own_results, monkeypatch):  # noqa: F811
    store = RatingStore.beside(own_results)
    token = store.add_reviewer("ada")
    answers, ids = _run(own_results)
    at = _labelling(own_results, monkeypatch, token)
    assert at.selectbox(key="label_pick").options == [f"{METRIC} on qa"], "the keywords task has nothing to label"
    choices, shown = ["Yes", "No", "Cannot tell", "No", "Yes", "Cannot tell"], []
    for choice in choices:
        assert not any(name in texts(at) for name in CANDIDATES), "a candidate's name on the page"
        out = _held(store, "ada")
        assert answers[out] in _shown(at) and QUESTION in _shown(at)
        assert at.radio(key="label_choice").value is None, "each answer starts unlabelled"
        _save(at, choice)
        shown.append(out)
        assert f"Your label of example {out.example_id} (qa) is saved." in _shown(at)
    assert not any(name in texts(at) for name in CANDIDATES), "a candidate's name after saving"
    order = label_order(1, METRIC, "qa", ids)
    assert [o.example_id for o in shown] == [ex for ex in order[:3] for _ in CANDIDATES]
    assert all({o.candidate for o in shown[i:i + 2]} == set(CANDIDATES) for i in (0, 2, 4))
    stored = [(lab.metric, lab.output, lab.value, lab.reviewer, lab.answer_sha256)
              for lab in LabelStore(store).labels("run-1")]
    assert stored == [(METRIC, out, VALUES[c], "ada", answer_sha256(answers[out]))
                      for out, c in zip(shown, choices, strict=True)]
    assert ("answers labelled: 6 of 20; usable sample: 3 examples for every candidate"
            in at.get("progress")[0].proto.text)
    assert "no skip" in texts(at) and not any(b.label == "Skip" for b in at.button)


def test_an_admin_sees_each_candidate_s_labels(own_results, monkeypatch):  # noqa: F811
    store = RatingStore.beside(own_results)
    root = store.add_reviewer("root", role="admin")
    at = _labelling(own_results, monkeypatch, root)
    for choice in ("Cannot tell", "Yes", "Cannot tell"):
        _save(at, choice)
    table = at.dataframe[0].value.set_index("candidate")
    assert table["answers labelled"].sum() == 3 and table["cannot tell"].sum() == 2
    assert sorted(table["usable sample"]) == [1, 2]
    assert "usable sample: 1 to 2 examples per candidate" in at.get("progress")[0].proto.text


def test_two_reviewers_label_different_answers(own_results, monkeypatch):  # noqa: F811
    store = RatingStore.beside(own_results)
    ada, bob = store.add_reviewer("ada"), store.add_reviewer("bob")
    _, ids = _run(own_results)
    queue = label_queue(1, METRIC, "qa", ids, CANDIDATES)
    at_ada = _labelling(own_results, monkeypatch, ada)
    at_bob = _labelling(own_results, monkeypatch, bob)
    assert (_held(store, "ada"), _held(store, "bob")) == (queue[0], queue[1])
    _save(at_bob, "No")
    _save(at_ada, "Yes")
    assert [(lab.output, lab.reviewer, lab.value) for lab in LabelStore(store).labels("run-1")] == [
        (queue[1], "bob", 1.0), (queue[0], "ada", 0.0)]
    assert (_held(store, "ada"), _held(store, "bob")) == (queue[3], queue[2]), "each takes the next free answer"
    stranger = app(own_results, monkeypatch, "Review", token=ada[:-1])  # a sign-in link one character off
    assert "Sign in with your personal link" in texts(stranger)
    assert not any(r.key == "rev_activity" for r in stranger.radio) and not stranger.button


def test_a_save_of_an_answer_gone_meanwhile_saves_nothing(own_results, monkeypatch):  # noqa: F811
    """ada's answer is taken from her while it is on her page (her hold ran out, bob took it): her label must not
    land on the answer the page shows next."""
    store = RatingStore.beside(own_results)
    ada = store.add_reviewer("ada")
    answers, ids = _run(own_results)
    queue = label_queue(1, METRIC, "qa", ids, CANDIDATES)
    at = _labelling(own_results, monkeypatch, ada)
    first = _held(store, "ada")
    with store.connect() as db:
        db.execute("DELETE FROM label_holds")  # the hold ran out
    digests = {o: answer_sha256(answers[o]) for o in queue}
    assert LabelStore(store).next_answer("run-1", METRIC, "bob", queue, digests) == first
    _save(at, "No")
    assert any("Nothing was saved" in w.value for w in at.warning)
    assert LabelStore(store).labels("run-1") == []
    assert _held(store, "ada") == queue[1] and answers[queue[1]] in _shown(at)


def test_a_rewritten_answer_is_labelled_again(own_results, monkeypatch):  # noqa: F811
    """An answer rewritten while on the page is not labelled as it was; one rewritten after labelling comes back
    into the queue, its old label no longer counted."""
    store = RatingStore.beside(own_results)
    ada = store.add_reviewer("ada")
    at = _labelling(own_results, monkeypatch, ada)
    first = _held(store, "ada")
    _rewrite_answer(own_results, first.candidate, first.example_id, "a regenerated answer")
    _save(at, "Yes")
    assert any("Nothing was saved" in w.value for w in at.warning), "a label of the old text, saved on the new one"
    assert LabelStore(store).labels("run-1") == [] and "a regenerated answer" in _shown(at)
    _save(at, "Yes")
    second = _held(store, "ada")
    _rewrite_answer(own_results, first.candidate, first.example_id, "regenerated again")
    at.run()
    assert "answers labelled: 0 of 20" in at.get("progress")[0].proto.text
    _save(at, "No")  # the answer ada held meanwhile
    assert _held(store, "ada") == first and "regenerated again" in _shown(at)
    _save(at, "Cannot tell")
    labels = {lab.output: lab for lab in LabelStore(store).labels("run-1")}
    assert labels[first].answer_sha256 == answer_sha256("regenerated again") and labels[first].value is None
    assert labels[second].value == 1.0


RUBRIC = "**Right** means *as the passage says*.\n# Not a heading\n- [not a link](http://example.org)"
MARKDOWN_ANSWER = "# Big news\n**bold** and [a link](http://example.org)"


def _judge(body: dict) -> str:
    """A judge that scores 3, passes everything and prefers the first of two answers."""
    system = body["messages"][0]["content"] if "messages" in body else body["prompt"]
    if "WINNER" in system:
        return "Judged fine.\nWINNER: A"
    return "Judged fine.\nVERDICT: PASS" if "VERDICT" in system else "Judged fine.\nSCORE: 3"


def _judged_run(tmp_path, talking_model, url):
    from harness.pipeline import run_suite

    task_file = qa_task(tmp_path / "task")
    task = yaml.safe_load(task_file.read_text())
    task["metrics"] = [METRIC, {"judge": "judge-model", "url": url, "rubric": RUBRIC, "name": "quality"},
                       {"judge": "judge-model", "url": url, "rubric": RUBRIC, "name": "verdict", "scale": "pass_fail"},
                       {"judge": "judge-model", "url": url, "rubric": "Which is better?", "name": "pref",
                        "against": "a"}]
    write_yaml(task_file, task)
    suite = write_yaml(tmp_path / "suite.yaml", {
        "name": "judged", "seed": 5, "tasks": [{"task": str(task_file), "limit": 3}],
        "candidates": [{"name": "a", "model": str(talking_model)},
                       {"name": "b", "model": str(talking_model), "few_shot": 1}],
        "bootstrap": {"resamples": 100}})
    run_suite(suite, tmp_path / "results", run_id="run-1")
    return tmp_path / "results"


def test_a_judge_s_rubric_and_an_answer_are_shown_as_text(tmp_path, talking_model, monkeypatch):
    """A judge's labels are asked with its own rubric and scale (a pairwise judge labels no single answer); the
    rubric and the answer are data, shown as written, never as Markdown, and the judge's verdict is not shown. (The
    judge stays up: reading a judged run checks its judges are there.)"""
    with FakeServer(reply=_judge) as judge:
        folder = _judged_run(tmp_path, talking_model, judge.url)
        answers, ids = _run(folder)
        first = label_queue(5, "quality", "qa", ids, ["a", "b"])[0]
        _rewrite_answer(folder, first.candidate, first.example_id, MARKDOWN_ANSWER)
        at = _labelling(folder, monkeypatch, name="ada")
        pick = at.selectbox(key="label_pick")
        assert pick.options == [f"{METRIC} on qa", "quality on qa", "verdict on qa"]
        pick.set_value(("quality", "qa")).run()
        assert f"{RUBRIC}\n\nScore the answer from 1 to 5." in _shown(at) and MARKDOWN_ANSWER in _shown(at)
        rendered = [e.value for kind in ("markdown", "caption", "title", "subheader") for e in getattr(at, kind)]
        assert not any("Right" in md or "Big news" in md for md in rendered), "data rendered as Markdown"
        assert "Judged fine" not in texts(at), "the judge's verdict shown beside the answer"
        assert at.radio(key="label_choice").options == ["1", "2", "3", "4", "5", "Cannot tell"]
        _save(at, "4")
        at.selectbox(key="label_pick").set_value(("verdict", "qa")).run()
        assert at.radio(key="label_choice").options == ["Pass", "Fail", "Cannot tell"]
        _save(at, "Fail")
        labels = RatingStore.beside(folder)
        stored = [(lab.metric, lab.output, lab.value, lab.answer_sha256) for lab in LabelStore(labels).labels("run-1")]
        verdict_first = label_queue(5, "verdict", "qa", ids, ["a", "b"])[0]
        now = {**answers, first: MARKDOWN_ANSWER}
        assert stored == [("quality", first, 4.0, answer_sha256(MARKDOWN_ANSWER)),
                          ("verdict", verdict_first, 0.0, answer_sha256(now[verdict_first]))]


def test_labels_from_the_page_correct_the_metric_in_the_gate_and_on_the_scorecard(own_results, monkeypatch,  # noqa: F811
                                                                                  tmp_path):
    """A reviewer labels every qa answer on the page a hallucination (the detector passed some): `harness gate`
    prints raw beside corrected, writes corrected.json and the corrected rows, decides a criterion on the corrected
    rate, and the Scorecard shows the table."""
    import json
    import subprocess
    import sys

    from harness.tracking import metrics_of

    store = RatingStore.beside(own_results)
    token = store.add_reviewer("ada")
    flagged = [row["finding"]["hallucinated"] for cand in CANDIDATES for row in
               map(json.loads, (own_results / "run-1" / "detections" / cand / "qa.jsonl").read_text().splitlines())]
    assert not all(flagged), "the detector must pass some answers for the labels to correct it"
    _, ids = _run(own_results)
    at = _labelling(own_results, monkeypatch, token)
    for _ in range(len(ids) * len(CANDIDATES)):
        assert _held(store, "ada") is not None
        _save(at, "No")  # not every claim supported: each answer is a hallucination, whatever the detector said
    assert len(LabelStore(store).labels("run-1")) == len(ids) * len(CANDIDATES)
    manifest = write_yaml(tmp_path / "manifest.yaml", {"confidence": 0.9, "min_examples": 1, "criteria": [
        {"task": "qa", "metric": "hallucination_rate_corrected", "candidate": CANDIDATES[1], "at_most": 0.5},
        {"task": "qa", "metric": "hallucination_rate", "candidate": CANDIDATES[1], "at_most": 0.99}]})
    done = subprocess.run([sys.executable, "-m", "harness.cli", "gate", str(own_results / "run-1"), "--manifest",
                           str(manifest)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr
    assert "corrected by reviewers' labels" in done.stdout and "10 of 10" in done.stdout
    rows = {(r["candidate"], r["metric"]): r for r in json.loads((own_results / "run-1" / "corrected.json")
                                                                  .read_text())}
    mine = rows[(CANDIDATES[1], METRIC)]
    assert mine["labels"] == 10 and mine["value"] == pytest.approx(1.0), "every answer labelled a hallucination"
    metrics = json.loads((own_results / "run-1" / "metrics.json").read_text())
    assert any(m["metric"] == "hallucination_rate_corrected" for m in metrics)
    verdict = json.loads((own_results / "run-1" / "verdict.json").read_text())
    corrected = next(c for c in verdict["criteria"] if c["metric"] == "hallucination_rate_corrected")
    assert corrected["status"] == "fail" and "10 labels" in corrected["evidence"]
    report = (own_results / "run-1" / "report.md").read_text()
    assert "## Corrected by reviewers' labels (90% intervals)" in report and "10 of 10" in report
    logged = metrics_of(RunDir(own_results / "run-1"))  # what MLflow gets: raw, corrected and the label count
    assert {k for k in logged if "hallucination_rate" in k and CANDIDATES[1] in k} >= {
        f"qa/{CANDIDATES[1]}/hallucination_rate", f"qa/{CANDIDATES[1]}/hallucination_rate_corrected",
        f"qa/{CANDIDATES[1]}/hallucination_rate_corrected.labels"}
    assert logged[f"qa/{CANDIDATES[1]}/hallucination_rate_corrected.labels"] == 10
    at = app(own_results, monkeypatch, "Scorecard")
    assert "Corrected by reviewers' labels (90% intervals)" in texts(at)
    table = next(df.value for df in at.dataframe if "corrected" in df.value.columns)
    assert set(table.candidate) == set(CANDIDATES) and set(table.labels) == {"10 of 10"}
