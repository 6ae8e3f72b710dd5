import json

import pytest

from harness.compare import compare_runs, has_regression
from harness.errors import HarnessError
from harness.store import RunDir
from tests.helpers import run_record


def _run(path, values):
    path.mkdir()
    RunDir(path).write_run(run_record())
    rows = [{"task": "qa", "candidate": c, "metric": m, "value": v, "ci_low": lo, "ci_high": hi, "n": 200,
             "higher_is_better": m != "e2e_ms_p50"} for (c, m), (v, lo, hi) in values.items()]
    (path / "metrics.json").write_text(json.dumps(rows))
    return path


def test_movement_beyond_the_intervals(tmp_path):
    before = _run(tmp_path / "a", {("ft", "token_f1"): (0.80, 0.76, 0.84), ("base", "token_f1"): (0.50, 0.45, 0.55),
                                   ("ft", "e2e_ms_p50"): (100, 90, 110)})
    after = _run(tmp_path / "b", {("ft", "token_f1"): (0.70, 0.66, 0.74), ("base", "token_f1"): (0.52, 0.47, 0.57),
                                  ("ft", "e2e_ms_p50"): (200, 190, 210)})
    changes = {(c.candidate, c.metric): c.movement for c in compare_runs(before, after)}
    assert changes == {("ft", "token_f1"): "regression", ("base", "token_f1"): "unchanged"}
    with_latency = {(c.candidate, c.metric): c.movement for c in compare_runs(before, after, latency=True)}
    assert with_latency[("ft", "e2e_ms_p50")] == "regression"
    assert has_regression(compare_runs(before, after))
    assert not has_regression(compare_runs(after, before))
    assert {c.movement for c in compare_runs(after, before)} == {"improvement", "unchanged"}


def test_runs_without_metrics_are_bad_input(tmp_path):
    (tmp_path / "a").mkdir()
    RunDir(tmp_path / "a").write_run(run_record(status="running"))
    with pytest.raises(HarnessError, match=r"no metrics\.json"):
        compare_runs(tmp_path / "a", tmp_path / "a")
    with pytest.raises(HarnessError, match="not a run directory"):
        compare_runs(tmp_path, tmp_path / "a")


def test_a_bound_that_does_not_exist_reaches_any_value(tmp_path):
    # A percentile of too few requests has no upper bound (null in metrics.json): a higher one later is no proven move.
    before = _run(tmp_path / "a", {("ft", "token_f1"): (0.80, 0.76, 0.84), ("ft", "e2e_ms_p50"): (300, 250, None)})
    after = _run(tmp_path / "b", {("ft", "token_f1"): (0.80, 0.76, 0.84), ("ft", "e2e_ms_p50"): (900, 800, None)})
    changes = {(c.candidate, c.metric): c.movement for c in compare_runs(before, after, latency=True)}
    assert changes[("ft", "e2e_ms_p50")] == "unchanged"
    faster = _run(tmp_path / "c", {("ft", "token_f1"): (0.80, 0.76, 0.84), ("ft", "e2e_ms_p50"): (100, 90, 120)})
    changes = {(c.candidate, c.metric): c.movement for c in compare_runs(faster, before, latency=True)}
    assert changes[("ft", "e2e_ms_p50")] == "regression"
