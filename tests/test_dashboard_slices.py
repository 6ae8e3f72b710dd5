"""The Slices page through AppTest, on a run directory scored by the harness itself from answers drawn so that the
fine-tune is better overall and worse on one product group, where it confuses b1 with b2 more than its base."""

import json
import time

import pytest
import torch
from safetensors.torch import save_file
from streamlit.testing.v1 import AppTest

from harness.evaluation import score_run, write_scored
from harness.pipeline import Pipeline
from harness.plan import make_plan
from harness.records import Completion
from harness.store import RunDir
from tests.conftest import write_yaml
from tests.fake_openai_server import FakeServer
from tests.test_dashboard import APP, texts

LABELS = ["a1", "a2", "b1", "b2"]
# Per label (10 examples each): what base and ft answer, in order.
ANSWERS = {"a1": (["a1"] * 5 + ["a2"] * 5, ["a1"] * 10), "a2": (["a2"] * 5 + ["a1"] * 5, ["a2"] * 10),
           "b1": (["b1"] * 9 + ["b2"], ["b1"] * 4 + ["b2"] * 6), "b2": (["b2"] * 9 + ["b1"], ["b2"] * 8 + ["b1"] * 2)}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("slices")
    rows = [{"id": f"{label}-{i}", "text": f"message {label} {i}", "label": label}
            for label in LABELS for i in range(10)]
    (root / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = write_yaml(root / "task.yaml", {
        "name": "bank", "kind": "classification", "labels": LABELS, "metrics": ["accuracy", "macro_f1"],
        "data": {"test": "test.jsonl", "id": "id", "inputs": {"text": "text"}, "reference": "label"},
        "prompt": {"template": "{text}"},
        "slices": [{"name": "product", "field": "reference", "groups": {"A": ["a1", "a2"], "B": ["b1", "b2"]}},
                   # P: ft right on 22 of 30 against the base's 23, a drop within noise.
                   {"name": "mix", "field": "reference", "groups": {"P": ["a1", "b1", "b2"], "Q": ["a2"]}}]})
    (root / "adapter").mkdir()
    (root / "adapter" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    save_file({"w": torch.zeros(1)}, str(root / "adapter" / "adapter_model.safetensors"))
    with FakeServer(reply=lambda body: "a1") as server:
        served = {"backend": "openai", "url": server.url}
        suite = write_yaml(root / "suite.yaml", {"name": "s", "tasks": [str(task)], "candidates": [
            {"name": "base", "model": "m", **served}, {"name": "ft", "model": "m", "adapter": str(root / "adapter"),
                                                       **served}],
            "manifest": {"criteria": [{"task": "bank", "metric": "accuracy", "candidate": "ft", "slice": "product",
                                       "worst": True, "at_least": 0.95}]}})
        run_plan = make_plan(suite)
    run = RunDir(root / "results" / "run-1")
    run.path.mkdir(parents=True)
    run.write_run(Pipeline(run_plan, root / "results")._record(run, "complete", time.strftime("%FT%T"), {}))
    for cand, pick in (("base", 0), ("ft", 1)):
        path = run.predictions_file(cand, "bank")
        path.parent.mkdir(parents=True)
        texts_ = [text for label in LABELS for text in ANSWERS[label][pick]]
        path.write_text("".join(Completion(r["id"], cand, "bank", t).to_json() + "\n"
                                for r, t in zip(rows, texts_, strict=True)))
    scored = score_run(run_plan, run, say=lambda _: None)
    write_scored(run_plan, run, scored)
    return root / "results", scored


def _app(results, monkeypatch, **query):
    monkeypatch.setenv("HARNESS_RESULTS", str(results))
    at = AppTest.from_file(str(APP), default_timeout=60)
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def test_the_run_flags_group_b_and_fails_the_worst_slice_criterion(results):
    _, scored = results
    assert [(c.slice, c.metric) for c in scored.slices.flagged] == [("B", "accuracy"), ("B", "macro_f1")]
    (verdict,) = scored.verdicts
    assert verdict.status == "fail" and "worst slice B 0.6" in verdict.evidence


def test_slices_page_shows_the_flagged_slice_first_and_links_grown_confusions(results, monkeypatch):
    folder, _ = results
    at = _app(folder, monkeypatch, page="Slices")
    shown = texts(at)
    assert "B: ft is worse than its base base here (-0.300" in shown
    chart = at.get("vega_lite_chart")[0].proto.spec
    assert '"B \\u2691"' in chart or '"B ⚑"' in chart
    table = at.table[0].value  # the metric by slice, the flagged slice first, candidates side by side
    assert list(table.index) == ["B ⚑", "A"] and list(table.columns) == ["n", "base", "ft"]
    assert table.loc["B ⚑", "base"].startswith("0.900 [") and table.loc["B ⚑", "ft"].startswith("0.600 [")
    assert "`b1` read as `b2`: 1 → 6" in shown
    assert "?page=Examples&task=bank&candidate=ft&reference=b1&predicted=b2" in shown
    assert "`a1` read as `a2`" not in shown  # fewer for ft than for its base


def test_a_drop_within_noise_is_listed_apart_never_flagged(results, monkeypatch):
    folder, _ = results
    at = _app(folder, monkeypatch, page="Slices")
    at.selectbox(key="sl_slicing").set_value(1).run()
    shown = texts(at)
    assert "within noise (not flagged): P (ft -0.033 [" in shown
    assert "is worse than its base" not in shown
    assert list(at.table[0].value.index) == ["P", "Q"]


def test_a_confusion_link_opens_its_examples(results, monkeypatch):
    folder, _ = results
    at = _app(folder, monkeypatch, page="Examples", task="bank", candidate="ft", reference="b1", predicted="b2")
    assert "6 of 40 examples" in texts(at)
    assert sorted(at.selectbox(key="ex_id").options) == [f"message b1 {i}" for i in range(4, 10)]
