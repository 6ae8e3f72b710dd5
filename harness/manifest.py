"""The success manifest: criteria written before training, resolved against a run into verdicts.

A criterion passes when its whole confidence interval lies on the right side of its threshold, fails
when the whole interval lies on the wrong side, and is `insufficient` in between (or when the task has
fewer examples than `min_examples`). `better_than … by` and `not_worse_than … margin` use the paired
interval of the difference on the same examples. "Better" follows the metric's direction: lower is
better for latency, error and hallucination rates.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import ConfigError
from harness.loading import read_yaml, validate
from harness.manifest_spec import Criterion, Manifest
from harness.metrics import METRICS, get_metric
from harness.metrics.human import RatingMetric
from harness.ratings import HumanRatings
from harness.records import STATUSES, Status, Verdict
from harness.scoring import TaskEvidence
from harness.stats import examples_needed, holm, mean_draws, percentile_interval

HUMAN_RESAMPLES = 2000


def load_manifest(path: str | Path) -> Manifest:
    path = Path(path)
    return validate(Manifest, read_yaml(path), path)


def _rated(metric: str) -> bool:
    return metric in METRICS and "ratings" in METRICS[metric].needs


def check_against(manifest: Manifest, where: Path | str, runs: dict[str, list[str]],
                  metrics: dict[str, list[str]]) -> None:
    """Every criterion names a task, candidate and metric the run has (human metrics come from ratings).
    `runs` maps each task to the candidates scored on it."""
    tasks = list(runs)
    candidates = list(dict.fromkeys(c for names in runs.values() for c in names))
    for i, c in enumerate(manifest.criteria):
        if c.task != "*" and c.task not in tasks:
            raise ConfigError(where, f"criteria.{i}.task", f"the run has no task {c.task!r} (has {', '.join(tasks)})")
        for field, name in (("candidate", c.candidate), ("better_than", c.better_than),
                            ("not_worse_than", c.not_worse_than)):
            if name is not None and name not in candidates:
                raise ConfigError(where, f"criteria.{i}.{field}",
                                  f"the run has no candidate {name!r} (has {', '.join(candidates)})")
            if name is not None and c.task != "*" and name not in runs[c.task]:
                raise ConfigError(where, f"criteria.{i}.{field}", f"candidate {name!r} is not scored on {c.task}")
        if _rated(c.metric) and c.baseline is not None:
            raise ConfigError(where, f"criteria.{i}.metric", f"{c.metric} takes at_least or at_most (the blind "
                              "comparisons already pit candidates against each other)")
        for task in tasks if c.task == "*" else [c.task]:
            if c.metric not in metrics[task] and not _rated(c.metric):
                raise ConfigError(where, f"criteria.{i}.metric", f"task {task} has no metric {c.metric!r}")
        _check_reachable(c, i, where)
    _check_consistent(manifest, where)


def _check_reachable(c: Criterion, i: int, where: Path | str) -> None:
    """A threshold the metric can never meet makes a criterion that fails whatever the model does."""
    low, high = METRICS[c.metric].value_range if c.metric in METRICS else (-math.inf, math.inf)
    if c.at_least is not None and c.at_least > high:
        raise ConfigError(where, f"criteria.{i}.at_least", f"{c.metric} is at most {high:g}; "
                          f"at least {c.at_least:g} can never hold")
    if c.at_most is not None and c.at_most < low:
        raise ConfigError(where, f"criteria.{i}.at_most", f"{c.metric} is at least {low:g}; "
                          f"at most {c.at_most:g} can never hold")
    if c.by is not None and c.by >= high - low:
        raise ConfigError(where, f"criteria.{i}.by", f"{c.metric} spans {low:g} to {high:g}; "
                          f"a lead of {c.by:g} can never hold")


def _check_consistent(manifest: Manifest, where: Path | str) -> None:
    """No two criteria on one task, metric and candidate ask for a value above a and below b < a."""
    floors: dict[tuple[str, str, str], tuple[int, float]] = {}
    ceilings: dict[tuple[str, str, str], tuple[int, float]] = {}
    for i, c in enumerate(manifest.criteria):
        key = (c.task, c.metric, c.candidate)
        if c.at_least is not None:
            floors.setdefault(key, (i, c.at_least))
        if c.at_most is not None:
            ceilings.setdefault(key, (i, c.at_most))
        if key in floors and key in ceilings and floors[key][1] > ceilings[key][1]:
            (a, floor), (b, ceiling) = floors[key], ceilings[key]
            raise ConfigError(where, "criteria", f"criteria.{a} (at least {floor:g}) and criteria.{b} "
                              f"(at most {ceiling:g}) contradict each other for {c.candidate} on {c.task} {c.metric}")


def short(value: float | None) -> str:
    """A number for people: integers for large values (latency in ms), four significant digits else."""
    if value is None or math.isnan(value):
        return "–"
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def _one_sided_p(draws: np.ndarray, threshold: float, above: bool) -> float:
    """Bootstrap p-value of "the criterion does not hold": the share of draws on the wrong side."""
    d = draws[~np.isnan(draws)]
    if len(d) == 0:
        return math.nan
    wrong = (d <= threshold).sum() if above else (d >= threshold).sum()
    return float((wrong + 1) / (len(d) + 1))


def _human_values(metric: str, candidate: str, task: str, human: HumanRatings | None,
                  ev: TaskEvidence) -> np.ndarray | None:
    """Per rated example: the rating metric's value (mean 1–5 rating, win share in blind comparisons, or a
    judge's agreement with the reviewers, which reads the judge's per-example scores)."""
    if human is None:
        return None
    rater = get_metric(metric)
    assert isinstance(rater, RatingMetric)
    judged = None
    if rater.reads is not None:
        per = get_metric(rater.reads).per_example(ev.stats(rater.reads)[candidate])
        judged = {ex.id: float(v) for ex, v in zip(ev.examples, per, strict=True)
                  if not np.isnan(v)} if per is not None else {}
    return rater.rated_values(human, task, candidate, judged)


def _absolute(c: Criterion) -> tuple[bool, float]:
    """(whether the value must lie above, the threshold) of an at_least or at_most criterion."""
    if c.at_least is not None:
        return True, c.at_least
    assert c.at_most is not None
    return False, c.at_most


def _resolve_one(c: Criterion, task: str, ev: TaskEvidence, manifest: Manifest,
                 human: HumanRatings | None = None) -> Verdict:
    label = c.describe() if c.task != "*" else c.describe().replace("* ", f"{task} ", 1)
    conf = manifest.confidence
    n = ev.n
    if _rated(c.metric):
        values = _human_values(c.metric, c.candidate, task, human, ev)
        if values is None or len(values) == 0:
            return Verdict(label, task, c.metric, c.candidate, c.baseline, threshold=math.nan, observed=None,
                           ci_low=None, ci_high=None, n=n, status="insufficient",
                           evidence=f"no human ratings ({c.metric}) of {c.candidate} on {task} yet")
        n = len(values)
        draws = mean_draws(values, HUMAN_RESAMPLES, seed=0)
        value = float(values.mean())
        low, high = percentile_interval(draws, conf)
        above, threshold = _absolute(c)
        p = _one_sided_p(draws, threshold, above)
        what = f"{short(value)} [{short(low)}, {short(high)}] over {n} rated examples"
    elif c.baseline is None:
        iv = ev.interval(c.metric, c.candidate, conf)
        value, low, high = iv.value, iv.low, iv.high
        above, threshold = _absolute(c)
        p = _one_sided_p(ev.draws(c.metric)[c.candidate], threshold, above)
        what = f"{short(value)} [{short(low)}, {short(high)}]"
    else:
        # Improvement over the baseline, in the metric's good direction.
        sign = 1.0 if get_metric(c.metric).higher_is_better else -1.0
        diff = ev.paired(c.metric, c.candidate, c.baseline, conf)
        value = sign * diff.delta
        low, high = sorted((sign * diff.low, sign * diff.high))
        above = True
        threshold = (c.by or 0.0) if c.better_than else -(c.margin or 0.0)
        d = ev.draws(c.metric)
        p = _one_sided_p(sign * (d[c.candidate] - d[c.baseline]), threshold, above=True)
        what = f"improvement over {c.baseline} {short(value)} [{short(low)}, {short(high)}]"
    status: Status
    if math.isnan(value) or math.isnan(low):
        status, why = "insufficient", f"{c.metric} has no value for {c.candidate} on {task}"
    elif (low > threshold) if above else (high < threshold):
        side = "above" if above else "below"
        status, why = "pass", f"{what}: the whole {conf:.0%} interval is {side} {short(threshold)}"
    elif (high < threshold) if above else (low > threshold):
        side = "below" if above else "above"
        status, why = "fail", f"{what}: the whole {conf:.0%} interval is {side} {short(threshold)}"
    else:
        status, why = "insufficient", f"{what}: the {conf:.0%} interval straddles {short(threshold)}"
    needed = None
    if status == "pass" and n < manifest.min_examples:
        status, why = "insufficient", f"{why}, but only {n} examples (min_examples {manifest.min_examples})"
        needed = manifest.min_examples
    elif status == "insufficient" and not math.isnan(value):
        needed = examples_needed(n, low, high, value, threshold)
        if needed is not None:
            needed = max(needed, manifest.min_examples)
            why += f"; about {needed} examples would settle it"
    return Verdict(label, task, c.metric, c.candidate, c.baseline, threshold=threshold, observed=value, ci_low=low,
                   ci_high=high, n=n, status=status, evidence=why, p_value=p, examples_needed=needed)


def _tasks_with(c: Criterion, evidence: dict[str, TaskEvidence]) -> list[str]:
    """The tasks a `*` criterion expands to: those on which all its candidates are scored."""
    names = [n for n in (c.candidate, c.baseline) if n is not None]
    return [t for t, ev in evidence.items() if all(n in ev.completions for n in names)]


def resolve(manifest: Manifest, evidence: dict[str, TaskEvidence], human: HumanRatings | None = None) -> list[Verdict]:
    """One verdict per criterion and task (`*` expands to every task)."""
    verdicts = [
        _resolve_one(c, task, evidence[task], manifest, human)
        for c in manifest.criteria
        for task in (_tasks_with(c, evidence) if c.task == "*" else [c.task])
    ]
    if not manifest.holm:
        return verdicts
    # Holm's correction over the family of claims: a pass must also survive the adjusted p-value.
    alpha = (1 - manifest.confidence) / 2
    ps = [v.p_value if v.p_value is not None and not math.isnan(v.p_value) else 1.0 for v in verdicts]
    out = []
    for v, adjusted in zip(verdicts, holm(ps), strict=True):
        if v.status == "pass" and adjusted >= alpha:
            v = replace(v, status="insufficient",
                        evidence=f"{v.evidence}; not significant after Holm correction (p={adjusted:.3g})")
        out.append(replace(v, p_value=adjusted))
    return out


def passed(verdicts: list[Verdict]) -> bool:
    return all(v.status == "pass" for v in verdicts)


def verdict_record(manifest: Manifest, verdicts: list[Verdict]) -> dict[str, Any]:
    counts = {s: sum(v.status == s for v in verdicts) for s in STATUSES}
    return {"passed": passed(verdicts), "confidence": manifest.confidence, "min_examples": manifest.min_examples,
            "holm": manifest.holm, "counts": counts, "criteria": [v.to_dict() for v in verdicts]}
