"""`harness rescore`: a finished run's answers scored by a changed suite and manifest give the figures and verdicts a
full run of that suite gives on the same answers, into a new run that names its source; a suite that asks other
candidates, tasks or prompts is refused in one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from harness.pipeline import rescore, run_suite
from harness.store import RunDir
from tests.conftest import classification_task, write_yaml
from tests.test_generation_cache import _cli

pytestmark = pytest.mark.slow

MANIFEST = {"criteria": [
    {"task": "keywords", "metric": "accuracy", "candidate": "zero", "at_least": 0.2},
    {"task": "keywords", "metric": "macro_f1", "candidate": "fewshot", "not_worse_than": "zero", "margin": 0.5},
    {"task": "keywords", "metric": "e2e_ms_p50", "candidate": "zero", "at_most": 1e6}]}


def _suite(tmp_path: Path, model: Path, metrics: list[str], **candidate) -> Path:
    task = tmp_path / "task" / "task.yaml"
    if not task.is_file():
        classification_task(tmp_path / "task", n_test=16)
    spec = yaml.safe_load(task.read_text())
    task.write_text(yaml.safe_dump({**spec, "metrics": metrics}))
    return write_yaml(tmp_path / "suite.yaml", {
        "name": "re", "seed": 5, "tasks": [str(task)],
        "candidates": [{"name": "zero", "model": str(model), "batch_size": 4},
                       {"name": "fewshot", "model": str(model), "few_shot": 2, "chat": False, "batch_size": 4,
                        **candidate}],
        "bootstrap": {"resamples": 300}})


def _figures(rows: list, *keys: str) -> dict:
    return {tuple(getattr(r, k) for k in keys): (r.value if hasattr(r, "value") else r.delta, r.ci_low, r.ci_high)
            for r in rows if not r.metric.startswith(("ttft", "itl", "tpot", "e2e", "output_tokens"))}


def test_a_rescored_run_equals_a_full_run_on_the_same_answers(tmp_path, talking_model):
    results = tmp_path / "results"
    write_yaml(tmp_path / "manifest.yaml", MANIFEST)
    source = run_suite(_suite(tmp_path, talking_model, ["accuracy"]), results, run_id="source", use_cache=False)
    changed = _suite(tmp_path, talking_model, ["accuracy", "macro_f1"])  # one metric added
    rescored = rescore(source.run_dir, changed, tmp_path / "manifest.yaml", run_id="rescored")
    full = run_suite(changed, results, run_id="full", manifest_file=tmp_path / "manifest.yaml", use_cache=False)
    for cand in ("zero", "fewshot"):  # greedy decoding: the full run answers as the source did
        texts = [{c.example_id: c.text for c in RunDir(r.run_dir).read_predictions(cand, "keywords")}
                 for r in (source, full)]
        assert texts[0] == texts[1]
    assert any(r.metric == "macro_f1" for r in rescored.results)
    assert _figures(rescored.results, "candidate", "metric") == _figures(full.results, "candidate", "metric")
    assert (_figures(rescored.comparisons, "candidate", "baseline", "metric")
            == _figures(full.comparisons, "candidate", "baseline", "metric"))
    assert [(v.criterion, v.status, v.observed) for v in rescored.verdicts if "e2e" not in v.criterion] == [
        (v.criterion, v.status, v.observed) for v in full.verdicts if "e2e" not in v.criterion]
    # Latency is the source run's, said so; nothing was generated.
    e2e = {r.candidate: r.value for r in source.results if r.metric == "e2e_ms_p50"}
    assert {r.candidate: r.value for r in rescored.results if r.metric == "e2e_ms_p50"} == e2e
    assert all(not math.isnan(v) for v in e2e.values())
    record = RunDir(rescored.run_dir).read_run()
    assert record.rescored_from == "source" and record.status == "complete"
    assert not any(k.endswith("/load") for k in record.timings_s), "no model was opened"
    assert "Rescored from run `source`" in (rescored.run_dir / "report.md").read_text()
    assert json.loads((rescored.run_dir / "verdict.json").read_text())["passed"] == all(
        v.status == "pass" for v in rescored.verdicts)


def test_a_suite_that_asks_other_questions_is_refused_in_one_line(tmp_path, talking_model, monkeypatch, capsys):
    results = tmp_path / "results"
    run_suite(_suite(tmp_path, talking_model, ["accuracy"]), results, run_id="source")
    source = str(results / "source")
    for change, said in (({"few_shot": 3}, "other prompts or generation settings for fewshot on keywords"),
                         ({"dtype": "float16"}, "another model, adapter, fine-tune or backend setting for "
                          "candidate fewshot"),
                         ({"name": "other"}, "other candidates or tasks (+other on keywords, -fewshot on keywords)")):
        suite = _suite(tmp_path, talking_model, ["accuracy", "macro_f1"], **change)
        code, _, err = _cli(monkeypatch, capsys, "rescore", source, "--suite", str(suite))
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
        assert said in lines[0] and f"than run {source}" in lines[0]
    assert sorted(p.name for p in results.iterdir() if (p / "run.json").is_file()) == ["source"], "nothing written"


def test_a_suite_served_otherwise_is_refused_since_its_latency_would_be_the_runs(tmp_path, talking_model, monkeypatch,
                                                                                  capsys):
    """A speed setting (batch size, concurrency, replicas) changes no answer but every latency figure: a rescore keeps
    the run's timings, so it must not score them as the timings of a suite served otherwise."""
    results = tmp_path / "results"
    run_suite(_suite(tmp_path, talking_model, ["accuracy"]), results, run_id="source")
    suite = _suite(tmp_path, talking_model, ["accuracy"], batch_size=1)
    code, _, err = _cli(monkeypatch, capsys, "rescore", str(results / "source"), "--suite", str(suite))
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1, err
    assert "other speed settings (batch_size) for candidate fewshot" in lines[0]
