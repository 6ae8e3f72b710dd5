"""Prediction-powered inference (PPI++) for a mean: the machine's values on every item, corrected by people's labels
on a uniformly random few.

Angelopoulos, Duchi and Zrnic, "PPI++: Efficient prediction-powered inference" (2023), for the mean. With f the
machine's value (a detector's 0/1 verdict, a judge's score) and y a person's label of the same item,

    theta_lambda = lambda * mean_N(f) + mean_n(y - lambda * f)

Convention: the N machine values are those of *every* item, the n labelled ones included (the labelled items are a
uniformly random subset of the N, and `machine_labelled` holds the very numbers `machine_all` holds for them). The
estimate is unbiased for any fixed lambda, since the labelled items' mean of y - lambda * f is unbiased for its
mean over all N. Writing mean_N(f) through the labelled and the N - n unlabelled items, theta equals ppi_py's
estimator on disjoint sets with lambda' = lambda * (N - n) / N; the interval is computed in that form, as two
independent means. The power-tuned lambda minimising the variance is Cov(y, f) / Var(f), estimated as the
least-squares slope of the labels on the machine over the labelled items (so the estimate is survey sampling's
two-phase regression estimator) and clipped to [0, 1]: 0 ignores the machine, 1 trusts it as far as it goes. The
target is the mean of the population the items are drawn from (the figure a gate decides on), not only of these N
items, so the interval also carries the N items' own sampling noise.

The interval is a normal (CLT) one, or a percentile bootstrap, only where a normal approximation holds for the
labelled part (`clt_trusted`); with few labels of a kind (5 hallucinations in 50 labels) it would be a Wald
interval's overconfident one, so there the labels' own interval stands in (Clopper–Pearson for 0/1 labels, the one
the gate gives a rate). `benchmarks/ppi_coverage.py` measures the coverage of both.

Labels a person could not give ("cannot tell") are the caller's to drop, with their items' machine values left in
`machine_all` only: this module refuses NaN rather than guess what it meant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.stats import binomtest, norm

from harness.errors import HarnessError
from harness.stats import (
    bounded_mean_interval,
    examples_needed,
    percentile_interval,
    resample_blocks,
    task_seed,
)

Method = Literal["clt", "bootstrap", "human_only"]


@dataclass(frozen=True)
class Spread:
    """The sample moments the CLT variance is built from, kept so that `labels_needed` can recompute it at another
    number of labels."""

    human_var: float  # of the labels
    covariance: float  # of labels and machine values, on the labelled items
    machine_var_labelled: float  # of the machine's values on the labelled items
    machine_var: float  # of the machine's values on all N items (the unlabelled ones' spread)


@dataclass(frozen=True)
class PPIEstimate:
    """A prediction-powered estimate of a mean with its interval, beside the interval the labels alone give and the
    machine's raw mean. `method` says which interval `low`/`high` are: `human_only` where the normal approximation
    cannot be trusted (labels that do not vary, few labels of a kind), so the labels' own mean and interval stand
    in."""

    estimate: float
    low: float
    high: float
    confidence: float
    method: Method
    n_labels: int
    n_total: int
    lam: float  # lambda in the all-N convention of the module docstring, in [0, 1]
    human_only: tuple[float, float]
    raw: tuple[float, float, float]  # the machine's mean over all N items, and its interval
    spread: Spread


def _checked(name: str, values: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """A 1-D float array of finite values inside the range, or a HarnessError saying what is wrong."""
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise HarnessError(f"{name}: expected one value per item (a 1-D array), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise HarnessError(f"{name}: {int((~np.isfinite(array)).sum())} values are NaN or infinite (drop the items "
                           "people could not label before estimating)")
    low, high = value_range
    if len(array) and (array.min() < low or array.max() > high):
        raise HarnessError(f"{name}: values outside the range [{low}, {high}]")
    return array


def _check_settings(confidence: float, value_range: tuple[float, float]) -> None:
    if not 0 < confidence < 1:
        raise HarnessError(f"confidence must be between 0 and 1, not {confidence}")
    if not value_range[0] < value_range[1]:
        raise HarnessError(f"value_range must be (low, high) with low < high, not {value_range}")


def unlabelled_values(machine_all: np.ndarray, machine_labelled: np.ndarray) -> np.ndarray:
    """The machine values of the items nobody labelled: `machine_all` without one occurrence of each labelled value
    (order is lost, which nothing here needs). Refuses labelled values that `machine_all` does not hold, the sign
    that the caller passed only the unlabelled items' values or values from another run."""
    ordered, labelled = np.sort(machine_all), np.sort(machine_labelled)
    if len(labelled) > len(ordered):
        raise HarnessError(f"{len(labelled)} labelled items but only {len(ordered)} machine values in all: "
                           "machine_all must hold every item's value, the labelled ones included")
    # The k-th repeat of a value among the labelled ones takes the k-th occurrence of it in machine_all.
    repeat = np.arange(len(labelled)) - np.searchsorted(labelled, labelled, side="left")
    position = np.searchsorted(ordered, labelled, side="left") + repeat
    inside = position < len(ordered)
    if not inside.all() or not np.array_equal(ordered[position], labelled):
        raise HarnessError("machine_labelled holds values that machine_all does not: machine_all must hold every "
                           "item's machine value, the labelled items' ones included (the same numbers)")
    return np.delete(ordered, position)


def _spread(machine_all: np.ndarray, machine_labelled: np.ndarray, human: np.ndarray) -> Spread:
    cov = np.cov(human, machine_labelled)
    return Spread(float(cov[0, 0]), float(cov[0, 1]), float(cov[1, 1]), float(np.var(machine_all, ddof=1)))


def tuned_lambda(spread: Spread) -> float:
    """The lambda (all-N convention) of least variance, Cov(y, f) / Var(f), as the least-squares slope of the labels
    on the machine over the labelled items (the two-phase regression estimator's b: Cochran, Sampling Techniques,
    ch. 12; exactly 1 for a machine that matches every label, where Var(f) over all N items would not give 1),
    clipped to [0, 1]; 0 where the machine's values do not vary there (they then say nothing about the labels)."""
    if spread.machine_var_labelled <= 0:
        return 0.0
    return float(np.clip(spread.covariance / spread.machine_var_labelled, 0.0, 1.0))


def clt_variance(spread: Spread, lam: float, n: np.ndarray, total: int) -> np.ndarray:
    """The variance of the estimate with n of `total` items labelled (an array of n, for `labels_needed`): the
    rectifier's mean over the labelled items and the machine's over the unlabelled ones are independent, with
    lambda' = lam * (total - n) / total."""
    shrunk = lam * (total - n) / total
    rectifier = (spread.human_var - 2 * shrunk * spread.covariance + shrunk**2 * spread.machine_var_labelled) / n
    unlabelled = np.maximum(total - n, 1)  # where none are left, lambda' is 0 and so is the term
    return np.maximum(rectifier, 0.0) + shrunk**2 * spread.machine_var / unlabelled


def clt_trusted(rectifier: np.ndarray) -> bool:
    """Whether the normal approximation to the rectifier's mean holds, by Cochran's rule as Sugden, Smith and Jones
    refined it ("Cochran's rule for simple random sampling", JRSS-B 2000): n > 28 + 25 * skewness^2. A rare label
    (5 hallucinations in 50) or a rare kind of disagreement with the machine makes the rectifier skewed, and a
    symmetric interval then misses on one side far more often than it says. The rule looks at the rectifier alone,
    not at its share of the variance: where labels missed the machine's rarer kind of error, that share looks small
    exactly when the interval is too narrow. Never at 28 labels or fewer, nor where the rectifier does not vary
    (its spread is unknown, not zero)."""
    n = len(rectifier)
    if n <= 28 or np.ptp(rectifier) == 0:
        return False
    centred = rectifier - rectifier.mean()
    skewness = float(np.mean(centred**3)) / float(np.mean(centred**2)) ** 1.5
    return n > 28 + 25 * skewness**2


def _z(confidence: float) -> float:
    return float(norm.ppf(0.5 + confidence / 2))


def _no_evidence() -> tuple[float, float]:
    return -np.inf, np.inf


def _raw_interval(machine_all: np.ndarray, value_range: tuple[float, float],
                  confidence: float) -> tuple[float, float]:
    """The machine's mean as if it were the truth: Clopper–Pearson for 0/1 values (as the gate's rates), else the
    normal interval (N is large, and the betting interval's grid would not fit in memory at N in the millions)."""
    if len(machine_all) < 2:
        return _no_evidence()
    if np.isin(machine_all, value_range).all():
        return bounded_mean_interval(machine_all, *value_range, confidence)
    half = _z(confidence) * float(np.std(machine_all, ddof=1)) / np.sqrt(len(machine_all))
    return float(machine_all.mean()) - half, float(machine_all.mean()) + half


def _resampled_sums(columns: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Each column's sum on every bootstrap resample of the rows (resamples × columns); gathered by index, twice as
    fast as the counts matrix where nothing else shares it."""
    return np.concatenate([np.stack([column[s.idx].sum(axis=1) for column in columns.T], axis=1)
                           for s in resample_blocks(len(columns), resamples, seed)])


def bootstrap_draws(machine_labelled: np.ndarray, human: np.ndarray, unlabelled: np.ndarray, resamples: int,
                    seed: int) -> np.ndarray:
    """The estimate on each resample: the labelled pairs and the unlabelled values resampled independently (the
    two parts the CLT variance adds up), lambda tuned again on each so its own noise is in the interval."""
    n, total = len(human), len(human) + len(unlabelled)
    sum_y, sum_f, sum_yf, sum_ff = _resampled_sums(
        np.stack([human, machine_labelled, human * machine_labelled, machine_labelled**2], axis=1),
        resamples, task_seed(seed, "labelled")).T
    sum_u = (_resampled_sums(unlabelled[:, None], resamples, task_seed(seed, "unlabelled"))[:, 0]
             if len(unlabelled) else np.zeros(resamples))
    covariance, machine_var = sum_yf - sum_y * sum_f / n, sum_ff - sum_f**2 / n  # both times n - 1
    ratio = np.divide(covariance, machine_var, out=np.zeros(resamples), where=machine_var > 0)
    lam = np.clip(ratio, 0.0, 1.0) if total > n else np.zeros(resamples)
    return lam * (sum_f + sum_u) / total + (sum_y - lam * sum_f) / n


def _inputs(machine_all: np.ndarray, machine_labelled: np.ndarray, human_labelled: np.ndarray,
            confidence: float, value_range: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three arrays as floats, checked (finite, inside the range, labels aligned), or a HarnessError."""
    _check_settings(confidence, value_range)
    machine_all = _checked("machine_all", machine_all, value_range)
    machine_labelled = _checked("machine_labelled", machine_labelled, value_range)
    human = _checked("human_labelled", human_labelled, value_range)
    if len(machine_labelled) != len(human):
        raise HarnessError(f"{len(human)} human labels but {len(machine_labelled)} machine values for the labelled "
                           "items: they must be aligned, one of each per labelled item")
    return machine_all, machine_labelled, human


def ppi_mean(machine_all: np.ndarray, machine_labelled: np.ndarray, human_labelled: np.ndarray,
             confidence: float = 0.95, method: Literal["clt", "bootstrap"] = "clt",
             value_range: tuple[float, float] = (0.0, 1.0), resamples: int = 2000, seed: int = 0) -> PPIEstimate:
    """The PPI++ estimate of the mean of people's labels and its interval (module docstring: conventions).

    `machine_all` is the machine's value on every item, `machine_labelled` and `human_labelled` the machine's and a
    person's value on the labelled items, aligned. `value_range` bounds both (a rate's (0, 1), a 1–5 rating's
    (1, 5)): values outside it are refused, and the labels' own interval uses it. Where the normal approximation
    cannot be trusted (`clt_trusted`), the labels' own interval (`stats.bounded_mean_interval`: Clopper–Pearson
    for 0/1) and mean stand in, with `method="human_only"` and lambda 0. Fewer than two labels give no interval
    (infinite bounds, NaN estimate), never one that looks confident on no data."""
    if method not in ("clt", "bootstrap"):
        raise HarnessError(f"method must be 'clt' or 'bootstrap', not {method!r}")
    machine_all, machine_labelled, human = _inputs(machine_all, machine_labelled, human_labelled, confidence,
                                                   value_range)
    unlabelled = unlabelled_values(machine_all, machine_labelled)
    n, total = len(human), len(machine_all)
    raw = (float(machine_all.mean()) if total else np.nan, *_raw_interval(machine_all, value_range, confidence))
    human_only = bounded_mean_interval(human, *value_range, confidence) if n else _no_evidence()
    if n < 2:
        return PPIEstimate(np.nan, *_no_evidence(), confidence, method, n, total, 0.0, human_only, raw,
                           Spread(np.nan, np.nan, np.nan, np.nan))
    spread = _spread(machine_all, machine_labelled, human)
    lam = tuned_lambda(spread) if total > n else 0.0
    # The rule looks at the labels' disagreement with the machine as it is weighted in the estimate (lambda, not the
    # shrunk weight): with N far above n the shrunk rectifier is nearly the labels alone, whose spread hides that
    # a sample without a single disagreement says nothing of how often the machine errs.
    if not clt_trusted(human - lam * machine_labelled):
        return PPIEstimate(float(human.mean()), *human_only, confidence, "human_only", n, total, 0.0, human_only,
                           raw, spread)
    estimate = float(lam * machine_all.mean() + (human - lam * machine_labelled).mean())
    if method == "bootstrap":
        low, high = percentile_interval(bootstrap_draws(machine_labelled, human, unlabelled, resamples, seed),
                                        confidence)
    else:
        half = _z(confidence) * float(np.sqrt(clt_variance(spread, lam, np.array(n), total)))
        low, high = estimate - half, estimate + half
    return PPIEstimate(estimate, low, high, confidence, method, n, total, lam, human_only, raw, spread)


def paired_ppi_difference(machine_all_a: np.ndarray, machine_all_b: np.ndarray, machine_labelled_a: np.ndarray,
                          machine_labelled_b: np.ndarray, human_labelled_a: np.ndarray, human_labelled_b: np.ndarray,
                          confidence: float = 0.95, method: Literal["clt", "bootstrap"] = "clt",
                          value_range: tuple[float, float] = (0.0, 1.0), resamples: int = 2000,
                          seed: int = 0) -> PPIEstimate:
    """mean(a) - mean(b) as people would label them, from both candidates' answers to the same N items: `ppi_mean`
    on per-item differences, so what the two share (a hard item) cancels. Requires every array of a aligned with
    b's: the machine's value for both candidates on every item, and both candidates' answers labelled on the same
    sampled items (a person labels each sampled item's two answers)."""
    _check_settings(confidence, value_range)
    pairs = {"machine_all": (machine_all_a, machine_all_b),
             "machine_labelled": (machine_labelled_a, machine_labelled_b),
             "human_labelled": (human_labelled_a, human_labelled_b)}
    differences: list[np.ndarray] = []
    for name, (a, b) in pairs.items():
        a, b = _checked(f"{name} (a)", a, value_range), _checked(f"{name} (b)", b, value_range)
        if len(a) != len(b):
            raise HarnessError(f"{name}: {len(a)} values for a but {len(b)} for b: a paired difference needs both "
                               "candidates on the same items")
        differences.append(a - b)
    width = value_range[1] - value_range[0]
    machine_all, machine_labelled, human = differences
    return ppi_mean(machine_all, machine_labelled, human, confidence=confidence, method=method,
                    value_range=(-width, width), resamples=resamples, seed=seed)


def labels_needed(estimate: PPIEstimate, threshold: float) -> int | None:
    """Roughly how many more labels (beyond `estimate.n_labels`) would put the CLT interval wholly on one side of the
    threshold, if the estimate and the sample moments stayed as they are (0 where it already is). None where it
    cannot be said: fewer than two labels, an estimate exactly at the threshold, labels and machine that do not vary,
    or a gap that even labelling every one of the N items would not settle."""
    if estimate.n_labels < 2 or not np.isfinite(estimate.estimate):
        return None
    gap = abs(estimate.estimate - threshold)
    if gap == 0 or not np.isfinite(gap):
        return None
    if estimate.low > threshold or estimate.high < threshold:
        return 0
    if estimate.method == "human_only":
        # The labels' own exact interval stands in (too few of a kind for the normal one): project its width.
        total = examples_needed(estimate.n_labels, estimate.low, estimate.high, estimate.estimate, threshold)
        if total is None or total > estimate.n_total:
            return None
        return max(total - estimate.n_labels, 1)
    labelled = np.arange(estimate.n_labels, estimate.n_total + 1)
    lam = tuned_lambda(estimate.spread)
    variance = clt_variance(estimate.spread, lam, labelled, estimate.n_total)
    settled = (variance > 0) & (_z(estimate.confidence) * np.sqrt(variance) < gap)
    if not settled.any():
        return None
    return int(labelled[np.argmax(settled)] - estimate.n_labels)


@dataclass(frozen=True)
class Rate:
    """count / of, with its Clopper–Pearson interval."""

    value: float
    low: float
    high: float
    count: int
    of: int


@dataclass(frozen=True)
class Agreement:
    """How the machine's 0/1 verdicts agree with people's on the labelled items. A rate is None where there is no
    item to compute it on (no item labelled 1 gives no sensitivity)."""

    sensitivity: Rate | None  # of the items people labelled 1, the share the machine gave 1
    specificity: Rate | None  # of the items people labelled 0, the share the machine gave 0
    true_positive: int
    false_positive: int
    false_negative: int
    true_negative: int
    confidence: float


def _rate(count: int, of: int, confidence: float) -> Rate | None:
    if of == 0:
        return None
    interval = binomtest(count, of).proportion_ci(confidence_level=confidence, method="exact")
    return Rate(count / of, float(interval.low), float(interval.high), count, of)


def agreement_with_labels(machine_binary: np.ndarray, human_binary: np.ndarray,
                          confidence: float = 0.95) -> Agreement:
    """Sensitivity and specificity of the machine against people's labels (both 0/1, aligned, one per item), with
    exact intervals and the four counts: what a reader needs to judge whether the machine is worth correcting."""
    _check_settings(confidence, (0.0, 1.0))
    machine = _checked("machine_binary", machine_binary, (0.0, 1.0))
    human = _checked("human_binary", human_binary, (0.0, 1.0))
    if not (np.isin(machine, (0.0, 1.0)).all() and np.isin(human, (0.0, 1.0)).all()):
        raise HarnessError("agreement_with_labels takes 0/1 values only (a detector's verdicts, people's labels)")
    if len(machine) != len(human):
        raise HarnessError(f"{len(machine)} machine verdicts but {len(human)} labels: they must be aligned")
    flagged, labelled = machine == 1, human == 1
    tp, fp = int((flagged & labelled).sum()), int((flagged & ~labelled).sum())
    fn, tn = int((~flagged & labelled).sum()), int((~flagged & ~labelled).sum())
    return Agreement(_rate(tp, tp + fn, confidence), _rate(tn, tn + fp, confidence), tp, fp, fn, tn, confidence)
