"""The metric interface, the registry of built-in metrics and a task's metrics.

A metric turns a task's examples and completions into a per-example statistics matrix (n × d), and
knows how to aggregate any resample of its rows into a value. The bootstrap in `harness.stats` only
ever calls `aggregate` with resampled row indices, so every metric, decomposable or not (macro-F1,
corpus BLEU, percentiles), gets confidence intervals and paired tests the same way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import numpy as np

from harness.config import TaskSpec
from harness.records import Completion, Example, Finding, Judgement, Resample
from harness.registry import Registry, UnknownName
from harness.stats import bounded_mean_interval

# What a metric can need: the task's labels, references or source passage; a hallucination detector's
# findings; the requests' timing (computed for every task); reviewers' ratings (resolved at gate time).
Need = Literal["labels", "reference", "source", "detector", "latency", "ratings", "judge"]
M = TypeVar("M", bound="Metric")


@dataclass(frozen=True)
class Labelling:
    """What a reviewer labelling an answer for a machine-scored metric is asked, and the value each answer choice
    stands for, on the metric's own scale ("cannot tell" is always offered and stored as no value)."""

    question: str
    choices: tuple[tuple[str, float], ...]
    worst: float  # what "cannot tell" counts as in the corrected metric: the candidate's bad side


@dataclass(frozen=True)
class ScoringInput:
    task: TaskSpec
    examples: list[Example]
    completions: list[Completion]  # aligned with examples
    labels: list[str] | None
    findings: list[Finding] | None = None  # a hallucination detector's, aligned with examples
    judgements: dict[str, list[Judgement]] | None = None  # judge metric name -> aligned with examples

    @property
    def texts(self) -> list[str]:
        # A failed request scores as an empty answer: it counts against quality, it is not skipped.
        return [c.text if c.ok else "" for c in self.completions]


@dataclass(frozen=True, kw_only=True)
class Metric(ABC):
    """A metric is an instance that declares what it is (family, direction, display) and what it needs; the planner,
    the scorer, the gate and the reports read these declarations, never the metric's name. Frozen: one instance
    serves every task and candidate, so nothing may be kept on it between calls."""

    name: str
    family: str
    higher_is_better: bool = True
    # The values the metric can take; a manifest threshold outside them can never hold.
    value_range: tuple[float, float] = (0.0, 1.0)
    decimals: int = 3
    unit: str = ""
    needs: frozenset[Need] = frozenset()
    # Latency metrics: the series ("ttft_ms") and statistic ("p50") they fill in latency.json.
    series: str | None = None
    statistic: str | None = None
    # A metric fed by a machine's verdicts (a detector, an LLM judge): the metric giving, per example, 1 where the
    # machine gave no usable verdict (unparsed reply, failed call) and 0 where it did. Such answers are left out of
    # this metric; the manifest makes a criterion insufficient when their share is above its `max_unparsed`.
    unparsed: str | None = None
    # Other candidates whose answers feed this metric (a pairwise judge's rival; "*": every other candidate of the
    # task, as in blind comparisons): their failures count too.
    rivals: tuple[str, ...] = ()
    # Compared through each side's own `interval` rather than a paired bootstrap (a tail percentile, whose
    # bootstrap cannot exceed what it saw).
    compared_by_intervals: bool = False
    # Why no criterion can be decided on this metric, if so (checked before any work).
    not_gateable: str | None = None
    # Computed from the requests' timing: an answer reused from the generation cache has none, so no criterion on it
    # is decided where a side holds such answers.
    timed: bool = False

    @property
    def note(self) -> str | None:
        """What a run says about how this metric is computed, where that needs saying."""
        return None

    def labelling(self) -> Labelling | None:
        """The question a reviewer answers to label one answer the way this metric's machine (a detector, a judge)
        scores it, for the metric's prediction-powered correction; None for a metric nobody labels."""
        return None

    @property
    def automatic(self) -> bool:
        """Computed for every task, listed or not (latency and errors come with every request)."""
        return "latency" in self.needs

    def format(self, value: float | None) -> str:
        if value is None or np.isnan(value):
            return "–"
        if np.isinf(value):
            return "∞" if value > 0 else "-∞"
        return f"{value:.{self.decimals}f}"

    @abstractmethod
    def stats(self, data: ScoringInput) -> np.ndarray:
        """Per-example statistics, shape (n, d) (a metric may define its own rows, see latency)."""

    @abstractmethod
    def aggregate(self, stats: np.ndarray, sample: Resample) -> np.ndarray:
        """The metric on each resample of the block; returns shape (b,)."""

    def per_example(self, stats: np.ndarray) -> np.ndarray | None:
        """A per-example value for scores.jsonl, where the metric has one."""
        return None

    def value(self, stats: np.ndarray, n: int) -> float:
        return float(self.aggregate(stats, Resample.identity(n))[0])

    def count(self, stats: np.ndarray) -> int:
        """How many examples have a value: `min_examples` counts these, not rows (an unparsed verdict is none)."""
        per = self.per_example(stats)
        return len(stats) if per is None else int((~np.isnan(per)).sum())

    def interval(self, stats: np.ndarray, confidence: float) -> tuple[float, float] | None:
        """An interval the metric computes itself instead of the bootstrap's (None: the bootstrap's)."""
        return None

    def min_n(self, confidence: float, above: bool) -> int:
        """The fewest examples with which the interval can lie wholly above (`above`) or below a threshold."""
        return 1

    def best_case(self, stats: np.ndarray, missing: np.ndarray) -> np.ndarray | None:
        """The statistics with the rows in `missing` at their best, for a baseline whose machine verdicts are missing
        there (a comparison must not gain from them either); None where the metric cannot say."""
        return None

    def worst_case(self, stats: np.ndarray, failed: np.ndarray) -> np.ndarray | None:
        """The statistics with the rows in `failed` (a boolean mask over examples: requests that failed, machine
        verdicts that are missing) counted at their worst for the candidate, for the gate: never better than any
        answer could have scored. None where the metric cannot say what its worst is; the gate then makes any
        such row insufficient evidence rather than guess."""
        return None


class MeanMetric(Metric):
    """The mean of a per-example value; NaN rows (not applicable) are left out."""

    @abstractmethod
    def values(self, data: ScoringInput) -> np.ndarray: ...

    def stats(self, data: ScoringInput) -> np.ndarray:
        v = np.asarray(self.values(data), dtype=np.float64)
        valid = ~np.isnan(v)
        return np.stack([np.where(valid, v, 0.0), valid.astype(np.float64)], axis=1)

    def aggregate(self, stats: np.ndarray, sample: Resample) -> np.ndarray:
        sums = sample.counts @ stats
        with np.errstate(invalid="ignore", divide="ignore"):
            return sums[:, 0] / sums[:, 1]

    def per_example(self, stats: np.ndarray) -> np.ndarray:
        return np.where(stats[:, 1] > 0, stats[:, 0], np.nan)

    def interval(self, stats: np.ndarray, confidence: float) -> tuple[float, float] | None:
        """A mean of values bounded by the metric's range takes an interval valid at any n: Clopper-Pearson's where
        every value is at an end of the range (a rate), the hedged betting interval otherwise. The percentile
        bootstrap covers far less than asked at the sizes teams gate on: 24 answers all right, or ten judge scores all
        4, give a zero-width interval that passes any threshold below. A mean with an unbounded side keeps it."""
        low, high = self.value_range
        values = self.per_example(stats)
        values = values[~np.isnan(values)]
        if len(values) == 0 or not (np.isfinite(low) and np.isfinite(high)):
            return None
        return bounded_mean_interval(values, low, high, confidence)

    def best_case(self, stats: np.ndarray, missing: np.ndarray) -> np.ndarray | None:
        """A baseline's missing verdict takes the metric's best value, so that it cannot favour the candidate."""
        low, high = self.value_range
        best = high if self.higher_is_better else low
        if not np.isfinite(best):
            return None
        out = stats.copy()
        out[missing] = (best, 1.0)
        return out

    def worst_case(self, stats: np.ndarray, failed: np.ndarray) -> np.ndarray | None:
        """A failed request takes the metric's worst value (a hallucination, not an abstention; a judge score at its
        scale's lowest). Where the range has no end on the bad side there is no worst (the request that timed out may
        be the runaway answer): None, and a criterion with failures is insufficient."""
        low, high = self.value_range
        worst = low if self.higher_is_better else high
        if not np.isfinite(worst):
            return None
        out = stats.copy()
        out[failed] = (worst, 1.0)
        return out


class SumStatsMetric(Metric):
    """A metric computed from sums of per-example sufficient statistics (F1, corpus BLEU, chrF)."""

    @abstractmethod
    def from_sums(self, sums: np.ndarray) -> np.ndarray:
        """(b, d) summed statistics -> (b,) values."""

    def aggregate(self, stats: np.ndarray, sample: Resample) -> np.ndarray:
        return self.from_sums(sample.counts @ stats)


@dataclass(frozen=True, kw_only=True)
class MeanOf(MeanMetric):
    """The mean of a per-example function of the answers (as lighteval's `SampleLevelMetric(fn, …)`): the function
    is plain maths, tested on its own; the instance declares the rest."""

    fn: Callable[[ScoringInput], np.ndarray]

    def values(self, data: ScoringInput) -> np.ndarray:
        return self.fn(data)


# The built-in metrics, by name; a task's own metrics are its TaskMetrics', never entered here.
METRICS: Registry[Metric] = Registry("metric")


def register(metric: M) -> M:
    """Register a built-in metric under its name."""
    METRICS.add(metric.name, metric)
    return metric


def get_metric(name: str) -> Metric:
    """A built-in metric by name; a task's metrics are found through its TaskMetrics."""
    return METRICS[name]


@dataclass(frozen=True)
class TaskMetrics:
    """One task's metrics: the names it lists (`listed`, a judge's unparsed share included) and what a name means for
    it: a metric the task defines itself (`own`: an `evaluate` module, a judge's score, unparsed share and agreement
    with reviewers), else a built-in one. The planned task holds it, so that two tasks of a suite may each define a
    metric of one name and a run rebuilt from disk gets its tasks' own back."""

    listed: tuple[str, ...] = ()
    own: Mapping[str, Metric] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Metric:
        found = self.own.get(name)
        if found is not None:
            return found
        if name in METRICS:
            return METRICS[name]
        raise UnknownName(f"unknown metric {name!r}; known: {', '.join(self.known())}")

    def __contains__(self, name: object) -> bool:
        return name in self.own or name in METRICS

    def get(self, name: str) -> Metric | None:
        found = self.own.get(name)
        return found if found is not None or name not in METRICS else METRICS[name]

    def known(self) -> list[str]:
        return sorted({*METRICS, *self.own})

    @property
    def names(self) -> list[str]:
        """What the task scores: its listed metrics, the share of missing machine verdicts behind any of them
        (reported beside the metric it qualifies), then the ones every task gets (latency, errors)."""
        names = list(self.listed)
        for name in self.listed:
            companion = self[name].unparsed if name in self else None
            if companion is not None and companion not in names:
                names.append(companion)
        return names + [name for name, m in METRICS.items() if m.automatic and name not in names]
