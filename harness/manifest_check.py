"""A manifest checked before any work: every criterion names a task, candidate and metric the run has, a threshold
its metric can reach and can miss, and enough test examples for its interval to lie wholly on one side (a tail
percentile needs many requests for a bound to exist); no two criteria contradict each other. A criterion the data
can never decide is refused here, not reported insufficient after the work."""

from __future__ import annotations

import math
from pathlib import Path

from harness.errors import ConfigError
from harness.loading import read_yaml, validate
from harness.manifest_spec import Criterion, Manifest
from harness.metrics import Metric, TaskMetrics
from harness.metrics.corrected import CorrectedMetric
from harness.slicing import Partition


def load_manifest(path: str | Path) -> Manifest:
    path = Path(path)
    return validate(Manifest, read_yaml(path), path)


def is_corrected(metric: str, metrics: TaskMetrics) -> bool:
    """A machine-scored metric corrected by reviewers' labels (`<metric>_corrected`)."""
    return metric in metrics and isinstance(metrics[metric], CorrectedMetric)


def is_rated(metric: str, metrics: TaskMetrics) -> bool:
    """A metric of reviewers' ratings alone (human_rating, human_win_rate, a judge's agreement with them)."""
    return metric in metrics and "ratings" in metrics[metric].needs and not is_corrected(metric, metrics)


def check_against(manifest: Manifest, where: Path | str, runs: dict[str, list[str]],
                  metrics: dict[str, TaskMetrics], sizes: dict[str, int] | None = None,
                  resamples: int | None = None, slicings: dict[str, list[Partition]] | None = None) -> None:
    """Every criterion names a task, candidate and metric the run has (human metrics come from ratings), and can
    be decided on the task's test examples (`sizes`, after sample and limit; `slicings`: each task's slices) with the
    bootstrap's `resamples`. `runs` maps each task to the candidates scored on it, `metrics` each task to its
    metrics."""
    tasks = list(runs)
    decided: list[tuple[int, Criterion, str]] = []
    candidates = list(dict.fromkeys(c for names in runs.values() for c in names))
    for i, c in enumerate(manifest.criteria):
        if c.task != "*" and c.task not in tasks:
            raise ConfigError(where, f"criteria.{i}.task", f"the run has no task {c.task!r} (has {', '.join(tasks)})")
        named = [n for n in (c.candidate, c.baseline, c.against) if n is not None]
        # A `*` criterion is resolved on the tasks that score all its candidates; with none it would vanish.
        applies = [c.task] if c.task != "*" else [t for t in tasks if all(n in runs[t] for n in named)]
        for field, name in (("candidate", c.candidate), ("better_than", c.better_than),
                            ("not_worse_than", c.not_worse_than), ("against", c.against)):
            if name is not None and name not in candidates:
                raise ConfigError(where, f"criteria.{i}.{field}",
                                  f"the run has no candidate {name!r} (has {', '.join(candidates)})")
            if name is not None and c.task != "*" and name not in runs[c.task]:
                raise ConfigError(where, f"criteria.{i}.{field}", f"candidate {name!r} is not scored on {c.task}")
        if not applies:
            raise ConfigError(where, f"criteria.{i}.task", f"no task scores {' and '.join(named)} together, so "
                              "this criterion could never be decided")
        for task in applies:
            _check_metric(c, i, where, metrics[task], task)
            if c.slice is not None:
                _check_slices(c, i, where, metrics[task], task, (slicings or {}).get(task, []), manifest.confidence)
        decided += [(i, c, task) for task in applies]
    # Holm's correction asks the first verdict for alpha / m: each must be decidable at that level.
    m = len(decided) if manifest.holm else 1
    if sizes is not None:
        for i, c, task in decided:
            if not is_rated(c.metric, metrics[task]):
                _check_decidable(c, metrics[task][c.metric], i, where, manifest, task, sizes[task],
                                 1 - (1 - manifest.confidence) / m)
    alpha = (1 - manifest.confidence) / 2
    if m > 1 and resamples is not None and 1 / (resamples + 1) >= alpha / m:
        raise ConfigError(where, "holm", f"{m} verdicts under Holm's correction need p-values below {alpha / m:.2g}; "
                          f"{resamples} bootstrap resamples give none below {1 / (resamples + 1):.2g} (set the suite's "
                          f"bootstrap.resamples to at least {math.ceil(m / alpha)})")
    _check_consistent(manifest, where)


def _check_metric(c: Criterion, i: int, where: Path | str, metrics: TaskMetrics, task: str) -> None:
    """The task scores the criterion's metric (or it comes from ratings), and a criterion on it can be decided."""
    rated = is_rated(c.metric, metrics)
    if rated and c.baseline is not None:
        raise ConfigError(where, f"criteria.{i}.metric", f"{c.metric} takes at_least or at_most (the blind "
                          "comparisons already pit candidates against each other)")
    named = metrics.get(c.metric)
    if isinstance(named, CorrectedMetric) and named.reads not in metrics.names:
        raise ConfigError(where, f"criteria.{i}.metric", f"{c.metric} corrects {named.reads}, which task {task} "
                          "does not score")
    if c.metric not in metrics.names and not rated and not isinstance(named, CorrectedMetric):
        raise ConfigError(where, f"criteria.{i}.metric", f"task {task} has no metric {c.metric!r}")
    metric = metrics[c.metric]
    if c.against is not None and not (rated and "*" in metric.rivals):
        raise ConfigError(where, f"criteria.{i}.against", f"{c.metric} has no opponent to name: `against` goes with "
                          "a metric of blind comparisons (human_win_rate)")
    if metric.not_gateable:
        raise ConfigError(where, f"criteria.{i}.metric", f"{c.metric} {metric.not_gateable}")
    _check_reachable(c, metric, i, where)


def _check_decidable(c: Criterion, metric: Metric, i: int, where: Path | str, manifest: Manifest, task: str, n: int,
                     confidence: float) -> None:
    """A criterion that cannot pass on the task's test examples, whatever the answers, is refused before any work."""
    if n < manifest.min_examples:
        raise ConfigError(where, f"criteria.{i}", f"{task} has {n} test examples (after sample and limit) but "
                          f"min_examples is {manifest.min_examples}: {c.describe()} can never pass")
    needed = min_n_for(metric, c, confidence)
    if n < needed:
        raise ConfigError(where, f"criteria.{i}", f"{task} has {n} test examples; {c.metric} needs at least "
                          f"{needed} for a {confidence:.3g} bound on that side"
                          f"{' (Holm)' if confidence > manifest.confidence else ''}: {c.describe()} can never pass")


def _check_slices(c: Criterion, i: int, where: Path | str, metrics: TaskMetrics, task: str,
                  partitions: list[Partition], confidence: float) -> None:
    """A criterion on slices names a slicing of the task, a metric scored per slice, and slices that can decide it."""
    partition = next((p for p in partitions if p.slicing == c.slice), None)
    if partition is None:
        has = ", ".join(p.slicing for p in partitions) or "none"
        raise ConfigError(where, f"criteria.{i}.slice", f"task {task} has no slicing {c.slice!r} (has {has})")
    if is_rated(c.metric, metrics) or is_corrected(c.metric, metrics):
        raise ConfigError(where, f"criteria.{i}.metric", f"{c.metric} comes from reviewers, not per slice")
    if c.max_gap is not None and len(partition.slices) < 2:
        raise ConfigError(where, f"criteria.{i}.slice", f"{c.slice} on {task} has one slice: a gap between slices "
                          f"can never be measured")
    needed = max(partition.min_size, min_n_for(metrics[c.metric], c, confidence))
    for name, members in partition.slices.items():
        if len(members) < needed:
            raise ConfigError(where, f"criteria.{i}.slice", f"slice {name!r} of {c.slice} on {task} has "
                              f"{len(members)} test examples, below the {needed} it needs (min_size "
                              f"{partition.min_size}): {c.describe()} can never pass")


def min_n_for(metric: Metric, c: Criterion, confidence: float) -> int:
    """The fewest examples with which the criterion's interval can lie wholly on its side. A comparison through
    each side's own interval (a tail percentile) needs both bounds, each at 1 - alpha/2."""
    if c.baseline is None:
        return metric.min_n(confidence, c.at_least is not None)
    each = 1 - (1 - confidence) / 2
    return max(metric.min_n(each, True), metric.min_n(each, False))


def _check_reachable(c: Criterion, metric: Metric, i: int, where: Path | str) -> None:
    """A threshold the metric can never meet makes a criterion that fails whatever the model does; one it can never
    miss, a criterion that passes whatever the model does (evidence of nothing)."""
    low, high = metric.value_range
    if c.at_most is not None and c.at_most >= high:
        raise ConfigError(where, f"criteria.{i}.at_most", f"{c.metric} is at most {high:g}; "
                          f"at most {c.at_most:g} can never fail")
    if c.at_least is not None and c.at_least <= low:
        raise ConfigError(where, f"criteria.{i}.at_least", f"{c.metric} is at least {low:g}; "
                          f"at least {c.at_least:g} can never fail")
    if c.margin is not None and c.margin >= high - low:
        raise ConfigError(where, f"criteria.{i}.margin", f"{c.metric} spans {low:g} to {high:g}; "
                          f"a loss of no more than {c.margin:g} can never fail")
    if c.at_least is not None and c.at_least > high:
        raise ConfigError(where, f"criteria.{i}.at_least", f"{c.metric} is at most {high:g}; "
                          f"at least {c.at_least:g} can never hold")
    if c.at_most is not None and c.at_most < low:
        raise ConfigError(where, f"criteria.{i}.at_most", f"{c.metric} is at least {low:g}; "
                          f"at most {c.at_most:g} can never hold")
    if c.max_gap is not None and c.max_gap >= high - low:
        raise ConfigError(where, f"criteria.{i}.max_gap", f"{c.metric} spans {low:g} to {high:g}; "
                          f"a gap of at most {c.max_gap:g} can never fail")
    if c.by is not None and c.by >= high - low:
        raise ConfigError(where, f"criteria.{i}.by", f"{c.metric} spans {low:g} to {high:g}; "
                          f"a lead of {c.by:g} can never hold")


def _check_consistent(manifest: Manifest, where: Path | str) -> None:
    """No two criteria on one task, metric and candidate ask for a value above a and below b < a."""
    floors: dict[tuple[str, str, str], tuple[int, float]] = {}
    ceilings: dict[tuple[str, str, str], tuple[int, float]] = {}
    for i, c in enumerate(manifest.criteria):
        if c.slice is not None:  # a bar on every slice does not contradict one on the whole set
            continue
        key = (c.task, c.metric, c.candidate)
        if c.at_least is not None:
            floors.setdefault(key, (i, c.at_least))
        if c.at_most is not None:
            ceilings.setdefault(key, (i, c.at_most))
        if key in floors and key in ceilings and floors[key][1] > ceilings[key][1]:
            (a, floor), (b, ceiling) = floors[key], ceilings[key]
            raise ConfigError(where, "criteria", f"criteria.{a} (at least {floor:g}) and criteria.{b} "
                              f"(at most {ceiling:g}) contradict each other for {c.candidate} on {c.task} {c.metric}")
