"""What changed between two runs of the same candidates and tasks (say last month's data and this
month's): a metric moved when the two runs' intervals do not overlap; a move in the bad direction is a
regression. The examples may differ between the runs, so the comparison is unpaired and conservative."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from harness.errors import HarnessError
from harness.metrics import METRICS
from harness.records import MetricResult
from harness.store import RunDir

Movement = Literal["regression", "improvement", "unchanged"]


@dataclass(frozen=True)
class Change:
    task: str
    candidate: str
    metric: str
    before: float
    before_ci: tuple[float, float]
    after: float
    after_ci: tuple[float, float]
    movement: Movement

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _metrics(run_dir: Path) -> tuple[dict[tuple[str, str, str], MetricResult], dict[str, list[str]]]:
    run = RunDir(run_dir)
    if not run.exists():
        raise HarnessError(f"{run_dir}: not a run directory (no run.json)")
    record = run.read_run()
    if not run.metrics_json.is_file():
        raise HarnessError(f"{run_dir}: the run has no {run.metrics_json.name} (status {record.status})")
    task_metrics = {name: info.metrics for name, info in record.tasks.items()}
    return {(r.task, r.candidate, r.metric): r for r in run.read_metrics()}, task_metrics


def compare_runs(before_dir: Path, after_dir: Path, latency: bool = False) -> list[Change]:
    """Changes of every task metric (and latency metrics if asked) present in both runs."""
    before, tasks_before = _metrics(before_dir)
    after, tasks_after = _metrics(after_dir)
    shared_tasks = [t for t in tasks_before if t in tasks_after]
    if not shared_tasks:
        raise HarnessError(f"{before_dir.name} and {after_dir.name} share no task")
    changes = []
    for key, b in before.items():
        task, _, metric = key
        if task not in shared_tasks or key not in after:
            continue
        if metric not in tasks_before[task] and not (latency and _is_latency(metric)):
            continue
        a = after[key]
        if math.isnan(b.value) or math.isnan(a.value):
            continue
        # A bound that does not exist (a tail percentile of few requests) is infinite: it reaches any value.
        moved = a.ci_low > b.ci_high or a.ci_high < b.ci_low
        better = (a.value > b.value) == b.higher_is_better
        movement: Movement = "unchanged" if not moved else ("improvement" if better else "regression")
        changes.append(Change(task, key[1], metric, b.value, (b.ci_low, b.ci_high), a.value, (a.ci_low, a.ci_high),
                              movement))
    if not changes:
        raise HarnessError(f"{before_dir.name} and {after_dir.name} share no candidate and metric")
    return changes


def _is_latency(metric: str) -> bool:
    """A latency percentile (in ms), as opposed to throughput or the error rate."""
    return metric in METRICS and METRICS[metric].family == "latency" and METRICS[metric].unit == "ms"


def has_regression(changes: list[Change]) -> bool:
    return any(c.movement == "regression" for c in changes)
