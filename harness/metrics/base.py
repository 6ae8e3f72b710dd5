"""The metric interface and registry.

A metric turns a task's examples and completions into a per-example statistics matrix (n × d), and
knows how to aggregate any resample of its rows into a value. The bootstrap in `harness.stats` only
ever calls `aggregate` with resampled row indices, so every metric, decomposable or not (macro-F1,
corpus BLEU, percentiles), gets confidence intervals and paired tests the same way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import numpy as np

from harness.backends.base import Completion
from harness.config import TaskSpec
from harness.data import Example
from harness.detectors.base import Finding


@dataclass(frozen=True)
class ScoringInput:
    task: TaskSpec
    examples: list[Example]
    completions: list[Completion]  # aligned with examples
    labels: list[str] | None
    findings: list[Finding] | None = None  # a hallucination detector's, aligned with examples

    @property
    def texts(self) -> list[str]:
        # A failed request scores as an empty answer: it counts against quality, it is not skipped.
        return [c.text if c.ok else "" for c in self.completions]


class Resample:
    """A block of b bootstrap resamples of n examples, as indices (b, n); the counts view (how often each
    example occurs in each resample) is computed once and shared by every metric and candidate."""

    def __init__(self, idx: np.ndarray) -> None:
        self.idx = idx

    @classmethod
    def identity(cls, n: int) -> Resample:
        return cls(np.arange(n)[None, :])

    @property
    def size(self) -> int:
        return self.idx.shape[0]

    @cached_property
    def counts(self) -> np.ndarray:
        b, n = self.idx.shape
        flat = (self.idx + (np.arange(b) * n)[:, None]).ravel()
        return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)


class Metric(ABC):
    name: ClassVar[str]
    higher_is_better: ClassVar[bool] = True
    # What the task must provide: "labels", "reference" or "source".
    requires: ClassVar[frozenset[str]] = frozenset()

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


class SumStatsMetric(Metric):
    """A metric computed from sums of per-example sufficient statistics (F1, corpus BLEU, chrF)."""

    @abstractmethod
    def from_sums(self, sums: np.ndarray) -> np.ndarray:
        """(b, d) summed statistics -> (b,) values."""

    def aggregate(self, stats: np.ndarray, sample: Resample) -> np.ndarray:
        return self.from_sums(sample.counts @ stats)


METRICS: dict[str, Metric] = {}


def register(cls: type[Metric]) -> type[Metric]:
    """Class decorator: one instance of each metric, found by its name."""
    if cls.name in METRICS:
        raise ValueError(f"metric {cls.name!r} registered twice")
    METRICS[cls.name] = cls()
    return cls


def get_metric(name: str) -> Metric:
    return METRICS[name]
