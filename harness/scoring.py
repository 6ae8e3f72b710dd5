"""Scores one candidate on one task: every metric with its bootstrap interval, and per-example values."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from harness.backends.base import Completion
from harness.config import TaskSpec
from harness.data import Example
from harness.metrics import LATENCY_METRICS, ScoringInput, get_metric
from harness.metrics.classification import parse_label
from harness.stats import bootstrap, task_seed


@dataclass(frozen=True)
class MetricResult:
    task: str
    candidate: str
    metric: str
    value: float
    ci_low: float
    ci_high: float
    n: int
    higher_is_better: bool

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class TaskScores:
    results: list[MetricResult]
    rows: list[dict[str, Any]]  # one per example, for scores.jsonl


def metric_names(task: TaskSpec) -> list[str]:
    return list(task.metrics) + [m for m in LATENCY_METRICS if m not in task.metrics]


def score(task: TaskSpec, candidate: str, examples: list[Example], completions: list[Completion],
          labels: list[str] | None, resamples: int, confidence: float, seed: int) -> TaskScores:
    data = ScoringInput(task=task, examples=examples, completions=completions, labels=labels)
    n = len(examples)
    results, columns = [], {}
    for name in metric_names(task):
        metric = get_metric(name)
        stats = metric.stats(data)
        interval = bootstrap(metric, stats, n, resamples, confidence, task_seed(seed, task.name))
        results.append(MetricResult(task.name, candidate, name, interval.value, interval.low, interval.high, n,
                                    metric.higher_is_better))
        per = metric.per_example(stats)
        if per is not None and name in task.metrics:
            columns[name] = per
    rows = []
    for i, (ex, c) in enumerate(zip(examples, completions, strict=True)):
        row: dict[str, Any] = {"task": task.name, "candidate": candidate, "example_id": ex.id, "error": c.error}
        if labels is not None:
            row["predicted_label"] = parse_label(c.text, labels) if c.ok else None
        for name, values in columns.items():
            v = float(values[i])
            row[name] = None if math.isnan(v) else v
        rows.append(row)
    return TaskScores(results, rows)
