"""The metrics a task defines itself (`{evaluate: module, name: …}`, `{judge: model, rubric: …, name: …}`), built
from its file at plan time into its TaskMetrics: never registered, so two tasks may use one name for two metrics."""

from __future__ import annotations

from harness.config import EvaluateMetricSpec, JudgeMetricSpec, TaskSpec
from harness.errors import ConfigError
from harness.metrics.base import METRICS, Metric, TaskMetrics
from harness.metrics.hf_evaluate import evaluate_metric
from harness.metrics.rubric_judge import judge_metrics


def task_metrics(task: TaskSpec) -> TaskMetrics:
    """The task's metrics: its own built and checked (a ConfigError names `metrics.N.…`), beside the built-in ones.
    An own metric may not take a built-in name, nor one another of the task's metrics has."""
    own: dict[str, Metric] = {}
    for i, entry in enumerate(task.metrics):
        where = f"metrics.{i}"
        if isinstance(entry, EvaluateMetricSpec):
            made: list[Metric] = [evaluate_metric(entry, task, where)]
        elif isinstance(entry, JudgeMetricSpec):
            made = judge_metrics(entry, task, where)
        else:
            continue
        for metric in made:
            if metric.name in METRICS:
                raise ConfigError(task.file, f"{where}.name", f"metric name {metric.name!r} is a built-in metric's")
            if metric.name in own:
                raise ConfigError(task.file, f"{where}.name", f"metric name {metric.name!r} is already one of "
                                  "this task's metrics")
            own[metric.name] = metric
    return TaskMetrics(tuple(task.metric_names), own)
