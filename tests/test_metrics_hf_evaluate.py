"""Metrics from `evaluate` modules written locally: values equal the module's own computation, intervals and
paired tests come from the same bootstrap, corpus-level modules are recomputed on resamples, and every problem
with a module is one line naming the task field."""

from __future__ import annotations

import shutil
from pathlib import Path

import evaluate
import numpy as np
import pytest
import yaml

from harness.config import TaskSpec, load_task
from harness.errors import ConfigError
from harness.metrics import METRICS, TaskMetrics
from harness.metrics.hf_evaluate import EvaluateMetric
from harness.plan import make_plan, plan_from_run
from harness.records import Resample
from harness.scoring import TaskEvidence
from harness.stats import draws, task_seed
from tests.conftest import qa_task, write_yaml
from tests.helpers import scoring_input
from tests.test_cli import run_cli

# The example's own module (examples/own-case) and a corpus-level one kept for the tests.
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own-case"
MODULES = Path(__file__).parent / "evaluate_modules"
ANSWERS = ["the parcel left on Monday", "on Monday", "it left Tuesday morning", "Monday", "no idea at all",
           "on Monday at noon", "the depot on Monday", "Friday"]
REFERENCES = ["on Monday", "on Monday", "on Monday", "on Monday", "on Tuesday", "on Monday", "Monday", "Friday"]


def _task(tmp_path: Path, *metrics: dict) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    for module in [EXAMPLE / "word_overlap.py", *MODULES.glob("*.py")]:
        shutil.copy(module, tmp_path / module.name)
    path = qa_task(tmp_path)
    task = yaml.safe_load(path.read_text())
    task["metrics"] = ["exact_match", *metrics]
    return write_yaml(path, task)


def _define(tmp_path: Path, *metrics: dict) -> tuple[TaskSpec, TaskMetrics]:
    from harness.plan import _check_task

    spec = load_task(str(_task(tmp_path, *metrics)))
    return spec, _check_task(spec)


def test_a_per_example_module_gives_the_modules_values_with_a_bootstrap_interval(tmp_path):
    _, defined = _define(tmp_path, {"evaluate": "word_overlap.py", "name": "overlap_t1"})
    metric = defined["overlap_t1"]
    data = scoring_input(ANSWERS, REFERENCES)
    stats = metric.stats(data)
    module = evaluate.load(str(EXAMPLE / "word_overlap.py"))
    per_item = [module.compute(predictions=[a], references=[r])["overlap"]
                for a, r in zip(ANSWERS, REFERENCES, strict=True)]
    assert metric.per_example(stats) == pytest.approx(per_item)
    assert metric.value(stats, len(ANSWERS)) == pytest.approx(np.mean(per_item))
    assert 0 < np.mean(per_item) < 1 and len(set(per_item)) > 3
    # The draws are the module's mean on each resample of the items.
    sample = Resample(np.random.default_rng(0).integers(0, len(ANSWERS), size=(5, len(ANSWERS))))
    assert metric.aggregate(stats, sample) == pytest.approx([np.mean([per_item[i] for i in row]) for row in sample.idx])


def test_a_corpus_level_module_is_recomputed_on_resamples_up_to_its_bound(tmp_path):
    _, defined = _define(tmp_path, {"evaluate": "length_ratio.py", "name": "ratio_t2", "key": "ratio",
                                    "per_example": False, "max_resamples": 50, "higher_is_better": False})
    metric = defined["ratio_t2"]
    assert "corpus-level" in metric.note
    stats = metric.stats(scoring_input(ANSWERS, REFERENCES))
    module = evaluate.load(str(MODULES / "length_ratio.py"))
    assert metric.value(stats, len(ANSWERS)) == pytest.approx(
        module.compute(predictions=ANSWERS, references=REFERENCES)["ratio"])
    got = draws(metric, {"c": stats}, len(ANSWERS), 120, task_seed(0, "t"))["c"]
    assert np.isfinite(got).sum() == 50 and np.isnan(got[50:]).all()
    first = next(iter(__import__("harness.stats", fromlist=["x"]).resample_blocks(len(ANSWERS), 120,
                                                                                    task_seed(0, "t"))))
    row = first.idx[0]
    assert got[0] == pytest.approx(module.compute(predictions=[ANSWERS[i] for i in row],
                                                  references=[REFERENCES[i] for i in row])["ratio"])
    # Nothing is kept on the metric between calls: the same draws again, and a later block of the series (a large
    # task's resamples come in several) computes only what remains of the bound.
    assert np.array_equal(draws(metric, {"c": stats}, len(ANSWERS), 120, task_seed(0, "t"))["c"], got, equal_nan=True)
    later = metric.aggregate(stats, Resample(first.idx[:20], first=40))
    assert np.isfinite(later[:10]).all() and np.isnan(later[10:]).all()


def test_paired_comparisons_and_intervals_cover_an_evaluate_metric(tmp_path):
    spec, defined = _define(tmp_path, {"evaluate": "word_overlap.py", "name": "overlap_t3"})
    a, b = scoring_input(ANSWERS, REFERENCES), scoring_input(ANSWERS[::-1], REFERENCES)
    ev = TaskEvidence(spec, a.examples, None, {"a": a.completions, "b": b.completions}, 400, 0, metrics=defined)
    [low, high] = [ev.interval("overlap_t3", "a", 0.95).low, ev.interval("overlap_t3", "a", 0.95).high]
    assert low < ev.interval("overlap_t3", "a", 0.95).value < high
    comparison = [c for c in ev.comparisons(0.95) if c.metric == "overlap_t3"]
    assert len(comparison) == 1 and comparison[0].test == "paired_bootstrap"


@pytest.mark.parametrize(("entry", "field", "words"), [
    ({"evaluate": "no_such_module.py", "name": "x1"}, "metrics.1.evaluate", "cannot load evaluate module"),
    ({"evaluate": "surely-not-a-cached-hub-metric", "name": "x2"}, "metrics.1.evaluate", "evaluate cache"),
    ({"evaluate": "word_overlap.py", "name": "x3", "args": {"nonsense": 1}}, "metrics.1.args", "does not compute"),
    ({"evaluate": "length_ratio.py", "name": "x4"}, "metrics.1.key", "returns ratio, answers"),
    ({"evaluate": "word_overlap.py", "name": "exact_match"}, "metrics.1.name", "a built-in metric's"),
    ({"evaluate": "word_overlap.py"}, "metrics.1.name", "required"),
])
def test_module_problems_name_the_task_field(tmp_path, entry, field, words):
    with pytest.raises(ConfigError) as info:
        _define(tmp_path, entry)
    assert info.value.field == field and words in str(info.value)


def test_a_task_defines_a_name_once(tmp_path):
    with pytest.raises(ConfigError, match="'twice' is already one of this task's metrics") as info:
        _define(tmp_path, {"evaluate": "word_overlap.py", "name": "twice"},
                {"evaluate": "length_ratio.py", "name": "twice", "key": "ratio"})
    assert info.value.field == "metrics.2.name"


def test_a_suite_scores_and_gates_on_an_evaluate_metric(tmp_path, talking_model, monkeypatch, capsys):
    task = _task(tmp_path / "task", {"evaluate": "word_overlap.py", "name": "overlap_suite"})
    suite = write_yaml(tmp_path / "suite.yaml", {
        "name": "ev", "tasks": [{"task": str(task), "limit": 6}],
        "candidates": [{"name": "a", "model": str(talking_model)},
                       {"name": "b", "model": str(talking_model), "few_shot": 1}],
        "bootstrap": {"resamples": 200},
        "manifest": {"criteria": [{"task": "qa", "metric": "overlap_suite", "candidate": "b", "at_most": 1.0}]}})
    code, _ = run_cli(monkeypatch, capsys, "run", str(suite), "--results", str(tmp_path / "r"), "--run-id", "x")
    assert code in (0, 1)
    from harness.store import RunDir

    run = RunDir(tmp_path / "r" / "x")
    rows = [r for r in run.read_metrics() if r.metric == "overlap_suite"]
    assert {r.candidate for r in rows} == {"a", "b"}
    module = evaluate.load(str(EXAMPLE / "word_overlap.py"))
    run_plan = make_plan(suite)
    refs = {e.id: e.references[0] for e in run_plan.tasks[0].data.test}
    for row in rows:
        preds = run.read_predictions(row.candidate, "qa")
        direct = np.mean([module.compute(predictions=[p.text.strip()], references=[refs[p.example_id]])["overlap"]
                          for p in preds])
        assert row.value == pytest.approx(direct)
    assert [v["metric"] for v in run.read_verdict()["criteria"]] == ["overlap_suite"]
    # The task's own metric is its planned task's, never a registered one; the run rebuilt from disk has it back.
    assert "overlap_suite" not in METRICS and "overlap_suite" in run_plan.tasks[0].metrics
    rebuilt, _ = plan_from_run(run.path)
    assert isinstance(rebuilt.tasks[0].metrics["overlap_suite"], EvaluateMetric)
    # The dashboard caches a run's tables by pickling them: the task's own metric goes along, its module reloaded.
    import pickle

    from dashboard.data import load_run

    copy = pickle.loads(pickle.dumps(load_run(run.path))).task_metrics["qa"]["overlap_suite"]
    assert copy.compute(["on Monday"], ["on Monday"]) == pytest.approx(1.0)
    assert copy.compute(["on Monday"], ["on Tuesday"]) == pytest.approx(1 / 3)
