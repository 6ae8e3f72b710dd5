"""Bootstrap confidence intervals over examples.

Each resample draws n example indices with replacement and the metric is recomputed on it (through
`Metric.aggregate`), so non-decomposable metrics get honest intervals. The draws depend only on the
seed and n: every candidate of a task sees the same resamples, which is what paired comparisons need.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from harness.metrics.base import Metric

# Resamples are processed in blocks so that (b × n) index and count matrices stay small in memory.
_BLOCK_ELEMENTS = 4_000_000


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float


def task_seed(seed: int, task: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{task}".encode()).digest()[:4], "little")


def resample_blocks(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_ELEMENTS // max(n, 1))
    done = 0
    while done < resamples:
        b = min(block, resamples - done)
        yield rng.integers(0, n, size=(b, n))
        done += b


def bootstrap(metric: Metric, stats: np.ndarray, n: int, resamples: int = 1000, confidence: float = 0.95,
              seed: int = 0) -> Interval:
    """The metric's value and its percentile-bootstrap interval."""
    value = metric.value(stats, n)
    draws = np.concatenate([metric.aggregate(stats, idx) for idx in resample_blocks(n, resamples, seed)])
    draws = draws[~np.isnan(draws)]
    if np.isnan(value) or len(draws) == 0:
        return Interval(value, float("nan"), float("nan"))
    alpha = (1 - confidence) / 2
    low, high = np.quantile(draws, [alpha, 1 - alpha])
    return Interval(value, float(low), float(high))
