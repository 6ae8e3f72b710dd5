"""Metrics on slices of a task's test examples: every task metric per slice with its interval (the whole set's
method, resampling within the slice), the paired difference of candidates within each slice, per candidate the
worst slice and the best-worst gap with a simultaneous interval, and the slices where a fine-tune is worse than its
base although it is better overall (Simpson's trap: flagged where it is beyond noise, corrected over the slices;
listed apart as within noise otherwise). Slices below their slicing's `min_size` are reported as too small and never
ranked."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np

from harness.config import Suite
from harness.records import JsonRow
from harness.scoring import TaskEvidence
from harness.slicing import Partition
from harness.stats import Interval, PairedDifference, holm, task_seed


@dataclass(frozen=True)
class SliceResult(JsonRow):
    task: str
    slicing: str
    slice: str
    candidate: str
    metric: str
    value: float
    ci_low: float
    ci_high: float
    n: int
    too_small: bool
    higher_is_better: bool
    confidence: float


@dataclass(frozen=True)
class SliceComparison(JsonRow):
    task: str
    slicing: str
    slice: str
    metric: str
    candidate: str
    baseline: str
    delta: float  # candidate - baseline within the slice
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    too_small: bool
    higher_is_better: bool
    confidence: float
    # The candidate fine-tunes the baseline and is better overall (its point estimate), and is worse on this slice
    # beyond noise across the slicing's slices (Simpson's trap): flagged.
    simpson: bool = False
    within_noise: bool = False  # worse on this slice by its point estimate only: listed, never flagged


@dataclass(frozen=True)
class SliceGap(JsonRow):
    task: str
    slicing: str
    candidate: str
    metric: str
    worst: str | None  # the slice with the worst value, among those large enough to rank
    worst_value: float
    best: str | None
    best_value: float
    gap: float  # |best - worst|
    ci_low: float
    ci_high: float
    ranked: int  # slices large enough to rank
    confidence: float


def finetune_bases(suite: Suite) -> dict[str, str]:
    """fine-tune -> its base: a candidate with `finetune:` or `adapter:`, and the first candidate of the same model
    with neither."""
    plain: dict[str, str] = {}
    for c in suite.candidates:
        if c.finetune is None and c.adapter is None:
            plain.setdefault(c.model, c.name)
    return {c.name: plain[c.model] for c in suite.candidates
            if (c.finetune is not None or c.adapter is not None) and c.model in plain}


def within(ev: TaskEvidence, indices: tuple[int, ...], key: str) -> TaskEvidence:
    """The evidence restricted to some examples (a slice), with its own resampling seed so that slices resample
    independently; who counts at their worst carries over."""

    def pick(rows: list[Any]) -> list[Any]:
        return [rows[i] for i in indices]

    return TaskEvidence(ev.task, pick(ev.examples), ev.labels, {c: pick(v) for c, v in ev.completions.items()},
                        ev.resamples, task_seed(ev.seed, key), {c: pick(f) for c, f in ev.findings.items()},
                        {c: {m: pick(j) for m, j in js.items()} for c, js in ev.judgements.items()},
                        worst_for=ev.worst_for, best_for=ev.best_for, needs_high=ev.needs_high, metrics=ev.metrics)


def subsets(ev: TaskEvidence, partition: Partition) -> dict[str, TaskEvidence]:
    """Each non-empty slice's evidence."""
    return {name: within(ev, idx, f"{partition.slicing}={name}") for name, idx in partition.slices.items() if idx}


def gap_interval(subs: dict[str, TaskEvidence], metric: str, candidate: str, confidence: float) -> Interval:
    """The gap between the best and worst slice (|max - min| of the slices' values) with an interval that holds for
    every pair of slices at once. A metric with its own interval (an exact one for rates, valid at any n) bounds each
    slice at 1 - (1 - confidence) / k (Bonferroni): gap <= max high - min low. Otherwise a simultaneous bootstrap:
    the slices resample independently, c is the `confidence` quantile of the largest deviation of any pairwise
    difference from its observed value, and the gap lies within c of the observed one."""
    values = np.array([s.interval(metric, candidate, confidence).value for s in subs.values()])
    if len(values) < 2 or np.isnan(values).any():
        return Interval(float("nan"), float("nan"), float("nan"))
    gap = float(values.max() - values.min())
    m = next(iter(subs.values())).metrics[metric]
    if all(m.interval(s.stats(metric)[candidate], confidence) is not None for s in subs.values()):
        each = 1 - (1 - confidence) / len(values)
        ivs = [s.interval(metric, candidate, each) for s in subs.values()]
        lows, highs = np.array([iv.low for iv in ivs]), np.array([iv.high for iv in ivs])
        return Interval(gap, max(0.0, float(lows.max() - highs.min())), float(highs.max() - lows.min()))
    deviations = np.stack([s.draws(metric)[candidate] for s in subs.values()]) - values[:, None]
    spread = np.nanmax(deviations, axis=0) - np.nanmin(deviations, axis=0)
    spread = spread[~np.isnan(spread)]
    if len(spread) == 0:
        return Interval(gap, float("nan"), float("nan"))
    c = float(np.quantile(spread, confidence))
    return Interval(gap, max(0.0, gap - c), gap + c)


@dataclass
class SliceReport:
    """Everything slices.json holds for a run."""

    confidence: float
    slicings: list[dict[str, Any]]
    results: list[SliceResult]
    comparisons: list[SliceComparison]
    gaps: list[SliceGap]

    def to_dict(self) -> dict[str, Any]:
        return {"confidence": self.confidence, "slicings": self.slicings,
                "results": [r.to_dict() for r in self.results],
                "comparisons": [c.to_dict() for c in self.comparisons], "gaps": [g.to_dict() for g in self.gaps]}

    @property
    def flagged(self) -> list[SliceComparison]:
        return [c for c in self.comparisons if c.simpson]

    @property
    def within_noise(self) -> list[SliceComparison]:
        return [c for c in self.comparisons if c.within_noise]


def slice_report(evidence: dict[str, TaskEvidence], partitions: dict[str, list[Partition]], confidence: float,
                 bases: dict[str, str]) -> SliceReport:
    report = SliceReport(confidence, [], [], [], [])
    for task, ev in evidence.items():
        for partition in partitions.get(task, []):
            subs = subsets(ev, partition)
            report.slicings.append({"task": task, "slicing": partition.slicing, "field": partition.field,
                                    "min_size": partition.min_size,
                                    "sizes": {name: len(idx) for name, idx in partition.slices.items()}})
            report.results += _results(ev, partition, subs, confidence)
            report.comparisons += _comparisons(ev, partition, subs, confidence, bases)
            report.gaps += _gaps(ev, partition, subs, confidence)
    return report


def _results(ev: TaskEvidence, partition: Partition, subs: dict[str, TaskEvidence],
             confidence: float) -> list[SliceResult]:
    out = []
    for name, sub in subs.items():
        for metric in ev.metrics.listed:
            for cand in ev.candidates:
                iv = sub.interval(metric, cand, confidence)
                out.append(SliceResult(ev.task.name, partition.slicing, name, cand, metric, iv.value, iv.low, iv.high,
                                       sub.n, partition.too_small(name), ev.metrics[metric].higher_is_better,
                                       confidence))
    return out


def _pairs(candidates: list[str], bases: dict[str, str]) -> list[tuple[str, str]]:
    """(candidate, baseline): every pair, later against earlier, except a fine-tune always against its base."""
    out = []
    for earlier, later in combinations(candidates, 2):
        out.append((earlier, later) if bases.get(earlier) == later else (later, earlier))
    return out


def _comparisons(ev: TaskEvidence, partition: Partition, subs: dict[str, TaskEvidence], confidence: float,
                 bases: dict[str, str]) -> list[SliceComparison]:
    out = []
    for cand, baseline in _pairs(ev.candidates, bases):
        for metric in ev.metrics.listed:
            sign = 1.0 if ev.metrics[metric].higher_is_better else -1.0
            better_overall = (bases.get(cand) == baseline
                              and sign * ev.paired(metric, cand, baseline, confidence).delta > 0)
            diffs = {name: sub.paired(metric, cand, baseline, confidence) for name, sub in subs.items()}
            beyond = _beyond_noise(diffs, subs, partition, (metric, cand, baseline), confidence)
            for name, d in diffs.items():
                small = partition.too_small(name)
                worse = better_overall and not small and sign * d.delta < 0
                out.append(SliceComparison(ev.task.name, partition.slicing, name, metric, cand, baseline, d.delta,
                                           d.low, d.high, d.p_value, subs[name].n, small, sign > 0, confidence,
                                           simpson=worse and name in beyond, within_noise=worse and name not in beyond))
    return out


def _beyond_noise(diffs: dict[str, PairedDifference], subs: dict[str, TaskEvidence], partition: Partition,
                  pair: tuple[str, str, str], confidence: float) -> set[str]:
    """The slices large enough to rank whose paired difference is not 0 with the confidence asked, corrected over
    those slices (a flag on any of k slices by chance stays within 1 - confidence): Holm's correction of their
    p-values (McNemar's exact test for rates), or for a metric compared through its own intervals (no p-value) its
    interval at 1 - (1 - confidence) / k (Bonferroni)."""
    names = [name for name in diffs if not partition.too_small(name)]
    alpha = 1 - confidence
    p_values = [diffs[name].p_value for name in names]
    if not np.isnan(p_values).any():
        return {name for name, p in zip(names, holm(p_values), strict=True) if p < alpha}
    metric, cand, baseline = pair
    each = [subs[name].paired(metric, cand, baseline, 1 - alpha / len(names)) for name in names]
    return {name for name, d in zip(names, each, strict=True) if d.low > 0 or d.high < 0}


def _gaps(ev: TaskEvidence, partition: Partition, subs: dict[str, TaskEvidence],
          confidence: float) -> list[SliceGap]:
    ranked = {name: sub for name, sub in subs.items() if not partition.too_small(name)}
    out = []
    for metric in ev.metrics.listed:
        sign = 1.0 if ev.metrics[metric].higher_is_better else -1.0
        for cand in ev.candidates:
            values = {name: sub.interval(metric, cand, confidence).value for name, sub in ranked.items()}
            known = {k: v for k, v in values.items() if not np.isnan(v)}
            worst = min(known, key=lambda k: sign * known[k]) if known else None
            best = max(known, key=lambda k: sign * known[k]) if known else None
            iv = gap_interval(ranked, metric, cand, confidence)
            out.append(SliceGap(ev.task.name, partition.slicing, cand, metric, worst,
                                known[worst] if worst else float("nan"), best, known[best] if best else float("nan"),
                                iv.value, iv.low, iv.high, len(ranked), confidence))
    return out
