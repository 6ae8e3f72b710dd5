"""Bootstrap confidence intervals and paired comparisons over examples.

Each resample draws n example indices with replacement and the metric is recomputed on it (through
`Metric.aggregate`), so non-decomposable metrics (macro-F1, corpus BLEU, percentiles) get honest
intervals. The draws depend only on the seed and n, and one block of resamples serves every candidate
of a task: candidate A's and B's values on resample k are on the same examples, so the paired
difference's distribution is simply draws(A) - draws(B).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from harness.records import Resample

# Resamples are processed in blocks so that (b × n) index and count matrices stay small in memory.
_BLOCK_ELEMENTS = 4_000_000


class Statistic(Protocol):
    """What the bootstrap needs of a metric, on arrays: its value on resampled rows of a per-example
    statistics matrix, and per-example values where it has them (for McNemar's test)."""

    def aggregate(self, stats: np.ndarray, sample: Resample) -> np.ndarray: ...

    def value(self, stats: np.ndarray, n: int) -> float: ...

    def per_example(self, stats: np.ndarray) -> np.ndarray | None: ...


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float


@dataclass(frozen=True)
class PairedDifference:
    delta: float  # metric(a) - metric(b) on the same examples
    low: float
    high: float
    p_value: float
    test: str  # "mcnemar" | "paired_bootstrap" | "none"


def task_seed(seed: int, task: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{task}".encode()).digest()[:4], "little")


def resample_blocks(n: int, resamples: int, seed: int) -> Iterator[Resample]:
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_ELEMENTS // max(n, 1))
    done = 0
    while done < resamples:
        b = min(block, resamples - done)
        yield Resample(rng.integers(0, n, size=(b, n)), first=done)
        done += b


def mean_draws(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """The mean of per-example values on each resample (for values that are not a registered metric, such
    as human ratings per example)."""
    n = len(values)
    return np.concatenate([sample.counts @ values / n for sample in resample_blocks(n, resamples, seed)])


def draws(metric: Statistic, stats: dict[str, np.ndarray], n: int, resamples: int, seed: int) -> dict[str, np.ndarray]:
    """The metric on each resample, for several candidates at once on the same resamples (NaN kept, so
    the arrays stay aligned resample by resample)."""
    out: dict[str, list[np.ndarray]] = {name: [] for name in stats}
    for sample in resample_blocks(n, resamples, seed):
        for name, s in stats.items():
            out[name].append(metric.aggregate(s, sample))
    return {name: np.concatenate(parts) for name, parts in out.items()}


# Stands in for an infinite latency (a failed request counted as an SLO miss) inside the interpolation, where
# inf - inf would give NaN; any percentile that interpolates towards it comes out infinite.
_MISS = 1e300


def latency_percentile(values: np.ndarray, q: float | np.ndarray) -> np.ndarray:
    """The one percentile definition for latency, in runs' metrics and in `harness bench` alike: numpy's
    default linear interpolation between order statistics, as vLLM's benchmark computes it, along the last
    axis; NaN (a missing time) is left out, and an all-NaN row gives NaN. An infinite value (a failed request
    counted as a miss) makes every percentile that reaches it infinite."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = np.nanpercentile(np.where(np.isposinf(values), _MISS, values), q, axis=-1, method="linear")
    return np.where(out >= _MISS * 1e-50, np.inf, out)


def order_statistic_interval(values: np.ndarray, q: float, confidence: float) -> tuple[float, float]:
    """A distribution-free interval for the q-th percentile (0-100) from the order statistics: the number of
    values below the true percentile is Binomial(n, q/100), so [x(l), x(u)] covers it with at least `confidence`
    (each side alpha/2). Unlike a bootstrap, whose resamples never exceed the largest value seen, the upper
    bound is +inf where n is too small for one to exist (p99 needs n >= 367 at 95%); the lower bound -inf alike."""
    from scipy.stats import binom

    x = np.sort(values[~np.isnan(values)])
    n = len(x)
    if n == 0:
        return float("nan"), float("nan")
    p, tail = q / 100, (1 - confidence) / 2
    upper = int(binom.ppf(1 - tail, n, p))  # 0-based index of the smallest order statistic above with 1 - tail
    lower = int(binom.ppf(tail, n, p))
    if binom.cdf(lower, n, p) > tail:
        lower -= 1
    return (float(x[lower]) if lower >= 0 else -np.inf), (float(x[upper]) if upper < n else np.inf)


def order_statistic_min_n(q: float, confidence: float, upper: bool) -> int:
    """The fewest values for which `order_statistic_interval` has a finite upper (or lower) bound."""
    p, tail = q / 100, (1 - confidence) / 2
    return int(np.ceil(np.log(tail) / np.log(p if upper else 1 - p)))


def bounded_mean_interval(values: np.ndarray, low: float, high: float, confidence: float) -> tuple[float, float]:
    """An interval for the mean of values bounded in [low, high] that holds at any n, where a percentile bootstrap
    does not (24 answers all right give it [1, 1], passing any threshold). 0/1 values take Clopper-Pearson's exact
    binomial interval; other bounded values (ratings) the hedged betting interval of Waudby-Smith and Ramdas
    ("Estimating means of bounded random variables by betting", JRSS-B 2024), valid without any assumption on the
    distribution and close to a t-interval once n is a few dozen."""
    from scipy.stats import beta

    x = (values[~np.isnan(values)] - low) / (high - low)
    n = len(x)
    if n == 0:
        return float("nan"), float("nan")
    if np.isin(x, (0.0, 1.0)).all():
        tail, k = (1 - confidence) / 2, float(x.sum())
        lower = 0.0 if k <= 0 else float(beta.ppf(tail, k, n - k + 1))
        upper = 1.0 if k >= n else float(beta.ppf(1 - tail, k + 1, n - k))
    else:
        lower, upper = _betting_interval(np.clip(x, 0.0, 1.0), 1 - confidence)
    return low + lower * (high - low), low + upper * (high - low)


def _betting_interval(x: np.ndarray, alpha: float, grid: int = 2000) -> tuple[float, float]:
    """The means m in [0, 1] that a gambler betting on "the mean is not m" (hedged, both directions, predictable
    plug-in bets) never multiplies their capital by 1/alpha against, on the values in a fixed shuffled order."""
    x = x[np.random.default_rng(0).permutation(len(x))]
    n, t = len(x), np.arange(1, len(x) + 1)
    mean = (0.5 + np.cumsum(x)) / (t + 1)
    var = (0.25 + np.cumsum((x - mean) ** 2)) / (t + 1)
    # Bets use only the values before them (their mean and variance up to t - 1).
    previous_var = np.concatenate([[0.25], var[:-1]])
    rate = np.sqrt(2 * np.log(2 / alpha) / (n * previous_var))
    m = (np.arange(grid) + 0.5) / grid
    # The grid in slices of about _BLOCK_ELEMENTS values, so memory stays bounded as n grows (each mean's capital
    # is its own row: the slices give the same figures as the whole grid at once).
    step = max(1, _BLOCK_ELEMENTS // n)
    peak = np.concatenate([_peak_capital(x, rate, m[i:i + step]) for i in range(0, grid, step)])
    kept = m[peak < 1 / alpha]
    if len(kept) == 0:
        return float("nan"), float("nan")
    return float(max(kept.min() - 0.5 / grid, 0.0)), float(min(kept.max() + 0.5 / grid, 1.0))


def _peak_capital(x: np.ndarray, rate: np.ndarray, m: np.ndarray) -> np.ndarray:
    """For each candidate mean in `m`, the highest capital the hedged gambler reaches over the values."""
    up = np.minimum(rate[None, :], 0.75 / m[:, None])
    down = np.minimum(rate[None, :], 0.75 / (1 - m[:, None]))
    gap = x[None, :] - m[:, None]
    capital = (0.5 * np.exp(np.cumsum(np.log1p(up * gap), axis=1))
               + 0.5 * np.exp(np.cumsum(np.log1p(-down * gap), axis=1)))
    return capital.max(axis=1)


Direction = Literal["at_least", "at_most"]
Decision = Literal["holds", "broken", "undecided"]


def decide(low: float, high: float, threshold: float, direction: Direction) -> Decision:
    """The one decision rule of the gate and the monitor: a rule holds only when its whole interval lies strictly
    on its side of the threshold, is broken when the whole interval lies strictly on the other side, and is
    undecided otherwise (an interval touching the threshold, or a missing bound)."""
    if np.isnan(low) or np.isnan(high):
        return "undecided"
    if direction == "at_least":
        return "holds" if low > threshold else "broken" if high < threshold else "undecided"
    return "holds" if high < threshold else "broken" if low > threshold else "undecided"


def p_value_by_confidence(holds: Callable[[float], bool]) -> float:
    """One-sided p-value of a criterion decided on intervals, where `holds(c)` says whether it passes at confidence
    c: (1 - c) / 2 for the highest c at which it still passes, found by bisection (the intervals nest as c grows).
    For intervals a metric computes itself (order statistics, slices' corrected bounds), whose bootstrap p-value
    would say nothing."""
    low, high = 1e-4, 1 - 1e-9
    if not holds(low):
        return 1.0
    if holds(high):
        return (1 - high) / 2
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (middle, high) if holds(middle) else (low, middle)
    return (1 - low) / 2


def repeated_percentile(values: np.ndarray, counts: np.ndarray, q: float) -> np.ndarray:
    """Per row of `counts` (b, n): `latency_percentile` of the sorted `values` each repeated that many times
    (a bootstrap resample of pooled values), without building the repeats. NaN for a row of zeros."""
    return _percentile_of_cumulative(_finite(values), np.cumsum(counts, axis=1), q)


# Rows of pooled counts handled at once by `pooled_percentile`: small enough to stay in cache.
_POOLED_SLICE = 1 << 18


def pooled_percentile(values: np.ndarray, owner: np.ndarray, counts: np.ndarray, q: float) -> np.ndarray:
    """`repeated_percentile(values, counts[:, owner], q)` without building that (b, len(values)) matrix: value t is
    repeated as often as its owner (the request of a pooled inter-token gap) was drawn. A few rows at a time, their
    counts as 32-bit integers summed in 64 bits into buffers reused from slice to slice: allocating the matrix
    afresh, in float64, made its cost grow faster than the number of values (page faults, cache misses)."""
    b, m = len(counts), len(values)
    step = min(b, max(1, _POOLED_SLICE // max(m, 1)))
    gathered, cum = np.empty((step, m), np.int32), np.empty((step, m), np.int64)
    finite = _finite(values)
    parts = []
    for first in range(0, b, step):
        rows = counts[first:first + step].astype(np.int32)
        np.take(rows, owner, axis=1, out=gathered[:len(rows)])
        np.cumsum(gathered[:len(rows)], axis=1, out=cum[:len(rows)])
        parts.append(_percentile_of_cumulative(finite, cum[:len(rows)], q))
    return np.concatenate(parts) if parts else np.empty(0)


def _finite(values: np.ndarray) -> np.ndarray:
    """Sorted values with an infinite one as _MISS, for the interpolation."""
    return np.where(np.isposinf(values), _MISS, values)


def _percentile_of_cumulative(finite: np.ndarray, cum: np.ndarray, q: float) -> np.ndarray:
    """`repeated_percentile` of `_finite(values)` from the counts' running sums along each row (`cum`, overwritten)."""
    total = cum[:, -1].copy()
    position = np.maximum(total - 1, 0) * q / 100
    below = np.floor(position)
    last = len(finite) - 1
    # The k-th (0-based) of the repeated values is values[number of cumulative counts <= k]. Each row of `cum`
    # is sorted, so that number is a binary search; the rows are searched at once laid end to end, each shifted
    # past every value of the rows before it (a search of row r then counts all of those rows' m entries).
    rows, m = cum.shape
    shift = np.arange(rows, dtype=cum.dtype) * (total.max(initial=0) + 2)
    cum += shift[:, None]
    laid = cum.ravel()
    before = np.arange(rows) * m
    lower = np.minimum(np.searchsorted(laid, below.astype(cum.dtype) + shift, side="right") - before, last)
    upper = np.minimum(np.searchsorted(laid, below.astype(cum.dtype) + 1 + shift, side="right") - before, last)
    out = finite[lower] + (position - below) * (finite[upper] - finite[lower])
    out = np.where(out >= _MISS * 1e-50, np.inf, out)
    return np.where(total > 0, out, np.nan)


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    alpha = (1 - confidence) / 2
    low, high = latency_percentile(values, np.array([alpha, 1 - alpha]) * 100)
    return float(low), float(high)


def interval(value: float, values: np.ndarray, confidence: float) -> Interval:
    """A value with the percentile interval of its bootstrap draws (none when the value does not exist)."""
    if np.isnan(value):
        return Interval(value, float("nan"), float("nan"))
    return Interval(value, *percentile_interval(values, confidence))


def bootstrap(metric: Statistic, stats: np.ndarray, n: int, resamples: int = 1000, confidence: float = 0.95,
              seed: int = 0) -> Interval:
    """The metric's value and its percentile-bootstrap interval."""
    return interval(metric.value(stats, n), draws(metric, {"x": stats}, n, resamples, seed)["x"], confidence)


def paired_difference(metric: Statistic, stats_a: np.ndarray, stats_b: np.ndarray, n: int,
                      draws_a: np.ndarray, draws_b: np.ndarray, confidence: float = 0.95) -> PairedDifference:
    """metric(a) - metric(b) with its paired percentile-bootstrap interval from aligned draws. The p-value
    is McNemar's exact test where the metric is a per-example 0/1 rate, else the two-sided paired
    bootstrap p-value."""
    delta = metric.value(stats_a, n) - metric.value(stats_b, n)
    d = draws_a - draws_b
    d = d[~np.isnan(d)]
    if np.isnan(delta) or len(d) == 0:
        return PairedDifference(delta, float("nan"), float("nan"), float("nan"), "none")
    low, high = percentile_interval(d, confidence)
    binary = _binary_outcomes(metric, stats_a, stats_b)
    if binary is not None:
        return PairedDifference(delta, low, high, mcnemar_p(*binary), "mcnemar")
    p = min(1.0, 2 * (min((d <= 0).sum(), (d >= 0).sum()) + 1) / (len(d) + 1))
    return PairedDifference(delta, low, high, float(p), "paired_bootstrap")


def difference_of_intervals(a: Interval, b: Interval) -> PairedDifference:
    """a - b with bounds from each side's own interval (unpaired, conservative: both intervals at once): where
    either side has no bound, the difference has none on that side. No p-value (the manifest inverts the
    intervals where it needs one)."""
    low, high = a.low - b.high, a.high - b.low
    return PairedDifference(a.value - b.value, -np.inf if np.isnan(low) else low, np.inf if np.isnan(high) else high,
                            float("nan"), "order_statistics")


def _binary_outcomes(metric: Statistic, stats_a: np.ndarray,
                     stats_b: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    a, b = metric.per_example(stats_a), metric.per_example(stats_b)
    if a is None or b is None or len(a) != len(b):
        return None
    both = ~(np.isnan(a) | np.isnan(b))
    a, b = a[both], b[both]
    if not np.isin(a, (0.0, 1.0)).all() or not np.isin(b, (0.0, 1.0)).all():
        return None
    return a, b


def mcnemar_p(a: np.ndarray, b: np.ndarray) -> float:
    """Exact (binomial) McNemar test on paired 0/1 outcomes: only the discordant pairs count."""
    from scipy.stats import binomtest

    only_a = int(((a == 1) & (b == 0)).sum())
    only_b = int(((a == 0) & (b == 1)).sum())
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control), in the input order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def examples_needed(n: int, low: float, high: float, value: float, threshold: float) -> int | None:
    """Roughly how many examples would put the interval wholly on one side of the threshold, assuming
    its half-width shrinks as 1/sqrt(n) and the observed value stays where it is."""
    gap = abs(value - threshold)
    half = (high - low) / 2
    if gap == 0 or np.isnan(gap) or np.isnan(half):
        return None
    return int(np.ceil(round(n * (half / gap) ** 2, 6)))
