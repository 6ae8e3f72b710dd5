"""Prediction-powered inference (harness/ppi.py): the estimator against hand arithmetic, its bias and coverage on
simulated populations of known truth, what it gains over the labels alone, and its refusals."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from harness.errors import HarnessError
from harness.ppi import (
    agreement_with_labels,
    labels_needed,
    paired_ppi_difference,
    ppi_mean,
    unlabelled_values,
)
from harness.stats import examples_needed

Z95 = 1.959963984540054


def _population(rng: np.random.Generator, total: int, rate: float, sensitivity: float,
                specificity: float) -> tuple[np.ndarray, np.ndarray]:
    """People's 0/1 labels drawn at `rate`, and a machine's 0/1 verdicts of known sensitivity and specificity."""
    human = (rng.random(total) < rate).astype(float)
    flagged = np.where(human == 1, rng.random(total) < sensitivity, rng.random(total) >= specificity)
    return human, flagged.astype(float)


def _draws(seed: int, draws: int, total: int, labels: int, rate: float, sensitivity: float, specificity: float,
           **options):
    """`draws` estimates, each on a fresh population with a fresh random sample of `labels` items labelled."""
    rng = np.random.default_rng(seed)
    for _ in range(draws):
        human, machine = _population(rng, total, rate, sensitivity, specificity)
        labelled = rng.choice(total, labels, replace=False)
        yield ppi_mean(machine, machine[labelled], human[labelled], **options)


def test_estimate_and_interval_equal_the_hand_computation():
    # 40 labelled items: 16 (y=1, f=1), 4 (1, 0), 4 (0, 1), 16 (0, 0); 60 unlabelled, 36 of them flagged.
    human = np.array([1.0] * 20 + [0.0] * 20)
    flagged = np.array([1.0] * 16 + [0.0] * 4 + [1.0] * 4 + [0.0] * 16)
    machine_all = np.concatenate([flagged, np.ones(36), np.zeros(24)])  # 56 of 100 flagged
    covariance = (16 * 0.25 - 4 * 0.25 - 4 * 0.25 + 16 * 0.25) / 39  # of y and f on the labelled items
    machine_var = 100 * 0.56 * 0.44 / 99
    label_var = 40 * 0.25 / 39  # of y, and of f on the labelled items alike
    lam = covariance / label_var  # the slope of y on f over the labelled items: 0.6
    estimate = lam * 0.56 + (0.5 - lam * 0.5)  # lambda * mean_N(f) + mean_n(y - lambda * f)
    shrunk = lam * 60 / 100  # lambda' of the disjoint form
    rectifier = (label_var - 2 * shrunk * covariance + shrunk**2 * label_var) / 40
    half = Z95 * np.sqrt(rectifier + shrunk**2 * machine_var / 60)

    got = ppi_mean(machine_all, flagged, human, confidence=0.95)

    assert got.method == "clt" and (got.n_labels, got.n_total) == (40, 100)
    assert got.lam == pytest.approx(lam)
    assert got.estimate == pytest.approx(estimate)  # 0.536
    assert (got.low, got.high) == pytest.approx((estimate - half, estimate + half))
    assert got.raw[0] == pytest.approx(0.56)
    ref = binomtest(20, 40).proportion_ci(0.95, method="exact")
    assert got.human_only == pytest.approx((ref.low, ref.high))


def test_the_estimate_is_unbiased_where_the_machine_is_not():
    """The machine flags 0.9 of hallucinated answers and 0.3 of good ones: its raw rate is 0.6 where the truth is
    0.5. Over 1000 populations the corrected estimate's mean is within four standard errors of 0.5."""
    estimates = list(_draws(1, 1000, 1000, 200, 0.5, 0.9, 0.7))
    values = np.array([e.estimate for e in estimates])
    assert all(e.method == "clt" for e in estimates)
    assert abs(values.mean() - 0.5) < 4 * values.std() / np.sqrt(len(values))
    assert np.mean([e.raw[0] for e in estimates]) == pytest.approx(0.6, abs=0.005)


def test_clt_interval_covers_the_true_rate_as_often_as_it_says():
    """1000 populations (rate 0.3, machine 0.9/0.85, 200 of 2000 labelled): 95% intervals cover 0.3 in 93–97%, the
    machine's own interval almost never (it is biased by 0.09)."""
    estimates = list(_draws(2, 1000, 2000, 200, 0.3, 0.9, 0.85))
    assert 0.93 <= np.mean([e.low <= 0.3 <= e.high for e in estimates]) <= 0.97
    assert np.mean([e.raw[1] <= 0.3 <= e.raw[2] for e in estimates]) < 0.05


@pytest.mark.slow
def test_bootstrap_interval_covers_the_true_rate():
    """The bootstrap option (labelled and unlabelled parts resampled apart): 400 populations, nominal 95%."""
    estimates = list(_draws(3, 400, 1000, 200, 0.3, 0.9, 0.85, method="bootstrap", resamples=500))
    assert all(e.method == "bootstrap" for e in estimates)
    assert 0.92 <= np.mean([e.low <= 0.3 <= e.high for e in estimates]) <= 0.98


def test_bootstrap_and_clt_intervals_agree_on_one_sample():
    rng = np.random.default_rng(4)
    human, machine = _population(rng, 3000, 0.4, 0.9, 0.9)
    clt = ppi_mean(machine, machine[:300], human[:300])
    boot = ppi_mean(machine, machine[:300], human[:300], method="bootstrap", resamples=4000)
    assert boot.estimate == clt.estimate
    assert boot.high - boot.low == pytest.approx(clt.high - clt.low, rel=0.1)
    assert boot.low == pytest.approx(clt.low, abs=0.01) and boot.high == pytest.approx(clt.high, abs=0.01)


def test_a_good_machine_narrows_the_interval():
    """Machine 0.95/0.95: lambda near 1, and the interval well under the labels' own (exact and CLT alike)."""
    estimates = list(_draws(5, 200, 2000, 200, 0.3, 0.95, 0.95))
    # Some draws fall back to the labels' own interval (lambda 0): their few disagreements are too skewed to trust.
    assert np.mean([e.lam for e in estimates]) > 0.7
    ppi = np.mean([e.high - e.low for e in estimates])
    exact = np.mean([e.human_only[1] - e.human_only[0] for e in estimates])
    labels_clt = np.mean([2 * Z95 * np.sqrt(e.spread.human_var / e.n_labels) for e in estimates])
    assert ppi < 0.7 * exact and ppi < 0.7 * labels_clt


def test_a_machine_that_agrees_with_every_label_earns_no_trust():
    """Labels without a single disagreement say nothing of how often the machine errs (a detector missing 3% of
    hallucinations agrees with 100 labels most of the time): the labels' own exact interval stands in, never a
    normal one resting on the machine's variance alone, which on 10,000 answers covered 78%."""
    rng = np.random.default_rng(11)
    for _ in range(50):
        human = (rng.random(1000) < 0.5).astype(float)
        found = ppi_mean(human, human[:100], human[:100])
        assert found.method == "human_only" and found.lam == 0 and found.estimate == pytest.approx(human[:100].mean())
        assert (found.low, found.high) == found.human_only


def test_a_near_perfect_machine_on_many_answers_still_covers():
    """Sensitivity 0.97, specificity 1, 10,000 answers, 100 labels: the normal interval on the shrunk rectifier
    covered 0.78 here; the interval must cover about 95%."""
    rng = np.random.default_rng(12)
    covered = []
    for _ in range(400):
        truth = (rng.random(10_000) < 0.3).astype(float)
        machine = np.where(truth == 1, rng.random(10_000) < 0.97, 0.0).astype(float)
        found = ppi_mean(machine, machine[:100], truth[:100])
        covered.append(found.low <= 0.3 <= found.high)
    assert np.mean(covered) >= 0.93


def test_a_machine_of_noise_is_ignored():
    """Verdicts independent of the truth: lambda near 0, and the interval that of the labels alone."""
    rng = np.random.default_rng(6)
    lams, ratios, shifts = [], [], []
    for _ in range(200):
        human = (rng.random(2000) < 0.4).astype(float)
        machine = (rng.random(2000) < 0.5).astype(float)
        e = ppi_mean(machine, machine[:200], human[:200])
        lams.append(e.lam)
        ratios.append((e.high - e.low) / (2 * Z95 * np.sqrt(e.spread.human_var / 200)))
        shifts.append(abs(e.estimate - human[:200].mean()))
    assert np.mean(lams) < 0.1
    assert np.mean(ratios) == pytest.approx(1.0, abs=0.02)
    assert np.mean(shifts) < 0.01


def test_few_labels_of_a_kind_give_the_labels_exact_interval():
    """Rate 0.1, 50 labels: about 5 hallucinations among them, too few for a normal interval (a Wald interval
    covers about 88% there). The exact interval stands in, and coverage stays at least nominal."""
    estimates = list(_draws(7, 1000, 2000, 50, 0.1, 0.7, 0.7))
    assert np.mean([e.method == "human_only" for e in estimates]) > 0.9
    assert np.mean([e.low <= 0.1 <= e.high for e in estimates]) >= 0.94
    for e in estimates[:50]:
        if e.method == "human_only":
            assert (e.low, e.high) == e.human_only and e.lam == 0 and e.low <= e.estimate <= e.high


@pytest.mark.slow
def test_paired_difference_covers_the_true_difference():
    """Two candidates answering the same 2000 questions (a right 0.8, b right 0.7, sharing half their draws), a
    machine judge right 90% of the time on each answer, 200 questions labelled for both: the estimate of
    a - b = 0.1 is unbiased and its interval covers it in 93–97% of 1000 draws."""
    rng = np.random.default_rng(8)
    estimates = []
    for _ in range(1000):
        shared = rng.random(2000)
        right_a = (np.where(rng.random(2000) < 0.5, shared, rng.random(2000)) < 0.8).astype(float)
        right_b = (np.where(rng.random(2000) < 0.5, shared, rng.random(2000)) < 0.7).astype(float)
        judged_a = np.where(rng.random(2000) < 0.9, right_a, 1 - right_a)
        judged_b = np.where(rng.random(2000) < 0.9, right_b, 1 - right_b)
        labelled = rng.choice(2000, 200, replace=False)
        estimates.append(paired_ppi_difference(judged_a, judged_b, judged_a[labelled], judged_b[labelled],
                                               right_a[labelled], right_b[labelled]))
    values = np.array([e.estimate for e in estimates])
    assert abs(values.mean() - 0.1) < 4 * values.std() / np.sqrt(len(values))
    assert 0.93 <= np.mean([e.low <= 0.1 <= e.high for e in estimates]) <= 0.97
    assert np.mean([e.lam for e in estimates]) > 0.5


def test_paired_difference_is_the_estimate_of_the_per_item_differences():
    rng = np.random.default_rng(9)
    a, b = rng.random(500), rng.random(500)
    ya, yb = np.clip(a + rng.normal(0, 0.1, 500), 0, 1), np.clip(b + rng.normal(0, 0.1, 500), 0, 1)
    paired = paired_ppi_difference(a, b, a[:100], b[:100], ya[:100], yb[:100])
    direct = ppi_mean(a - b, (a - b)[:100], (ya - yb)[:100], value_range=(-1, 1))
    assert paired == direct
    with pytest.raises(HarnessError, match="same items"):
        paired_ppi_difference(a, b[:-1], a[:100], b[:100], ya[:100], yb[:100])


def test_labels_needed_matches_the_labels_alone_when_the_machine_says_nothing():
    """A machine that gives every item the same value: lambda 0, the interval that of the labels, so the count
    is the usual 1/sqrt(n) projection (`stats.examples_needed`), less the labels already there."""
    human = np.array([1.0] * 45 + [0.0] * 55)
    e = ppi_mean(np.zeros(1000), np.zeros(100), human)
    assert e.lam == 0 and e.method == "clt"
    more = labels_needed(e, 0.4)
    assert more == examples_needed(100, e.low, e.high, e.estimate, 0.4) - 100  # 385 in all: (0.098 / 0.05)^2 * 100
    assert more is not None and more > 0


def test_labels_needed_falls_as_the_threshold_moves_away_and_the_machine_improves():
    rng = np.random.default_rng(10)
    human, truth_machine = _population(rng, 5000, 0.3, 0.95, 0.95)
    noisy = np.where(rng.random(5000) < 0.35, 1 - truth_machine, truth_machine)  # right 0.62 of the time
    good = ppi_mean(truth_machine, truth_machine[:200], human[:200])
    poor = ppi_mean(noisy, noisy[:200], human[:200])
    assert good.method == poor.method == "clt"
    counts = [labels_needed(good, good.estimate + gap) for gap in (0.03, 0.025, 0.02, 0.015)]
    assert all(c is not None for c in counts) and counts == sorted(counts) and 0 < counts[0] < counts[-1]
    for gap in (0.03, 0.02):
        assert labels_needed(good, good.estimate - gap) < labels_needed(poor, poor.estimate - gap)
    assert labels_needed(good, good.estimate) is None  # never settled at the threshold itself
    assert labels_needed(good, good.high + 0.01) == 0  # already settled
    assert labels_needed(good, good.estimate + 0.005) is None  # not even with all 5000 labelled


def test_too_few_or_uniform_labels_give_no_confident_interval():
    machine = (np.arange(500) % 3 == 0).astype(float)
    none = ppi_mean(machine, machine[:0], np.array([]))
    one = ppi_mean(machine, machine[:1], np.array([1.0]))
    for e in (none, one):
        assert np.isnan(e.estimate) and (e.low, e.high) == (-np.inf, np.inf)
    assert labels_needed(one, 0.5) is None
    # 50 labels, none hallucinated, though the machine flagged some: the exact interval, not a width of zero.
    zeros = ppi_mean(machine, machine[:50], np.zeros(50))
    assert zeros.method == "human_only" and zeros.estimate == 0 and zeros.low == 0
    assert zeros.high == pytest.approx(1 - 0.025 ** (1 / 50))
    # 20 labels: too few for a normal interval whatever they are.
    assert ppi_mean(machine, machine[:20], (np.arange(20) % 2).astype(float)).method == "human_only"


def test_every_item_labelled_is_the_labels_alone():
    human = (np.arange(300) % 4 == 0).astype(float)
    machine = (np.arange(300) % 2 == 0).astype(float)
    e = ppi_mean(machine, machine, human)
    half = Z95 * human.std(ddof=1) / np.sqrt(300)
    assert e.lam == 0 and e.estimate == pytest.approx(0.25)
    assert (e.low, e.high) == pytest.approx((0.25 - half, 0.25 + half))


@pytest.mark.parametrize("arrays, message", [
    ((np.ones(100), np.ones(10), np.ones(9)), "aligned"),
    ((np.ones(100), np.ones(10), np.array([np.nan] + [1.0] * 9)), "NaN"),
    ((np.ones(100), np.zeros(10), np.ones(10)), "machine_all does not"),  # labelled values not among all
    ((np.ones(5), np.ones(10), np.ones(10)), "only 5"),
    ((np.ones(100), np.ones(10), np.full(10, 2.0)), "outside the range"),
    ((np.ones((10, 10)), np.ones(10), np.ones(10)), "1-D"),
])
def test_misuse_is_refused(arrays, message):
    with pytest.raises(HarnessError, match=message):
        ppi_mean(*arrays)


@pytest.mark.parametrize("options, message", [({"confidence": 1.0}, "confidence"),
                                              ({"method": "wald"}, "method"),
                                              ({"value_range": (1, 1)}, "value_range")])
def test_bad_settings_are_refused(options, message):
    with pytest.raises(HarnessError, match=message):
        ppi_mean(np.ones(100), np.ones(10), np.ones(10), **options)


def test_unlabelled_values_remove_one_occurrence_per_labelled_item():
    assert sorted(unlabelled_values(np.array([0.2, 1.0, 0.2, 0.5, 0.2]), np.array([0.2, 0.5, 0.2]))) == [0.2, 1.0]


def test_agreement_with_labels_by_hand():
    machine = np.array([1] * 18 + [0] * 2 + [1] * 3 + [0] * 27)
    human = np.array([1] * 20 + [0] * 30)
    a = agreement_with_labels(machine, human, confidence=0.9)
    assert (a.true_positive, a.false_negative, a.false_positive, a.true_negative) == (18, 2, 3, 27)
    assert a.sensitivity is not None and a.specificity is not None
    assert (a.sensitivity.value, a.sensitivity.count, a.sensitivity.of) == (0.9, 18, 20)
    assert (a.specificity.value, a.specificity.count, a.specificity.of) == (0.9, 27, 30)
    ref = binomtest(18, 20).proportion_ci(0.9, method="exact")
    assert (a.sensitivity.low, a.sensitivity.high) == pytest.approx((ref.low, ref.high))
    none_labelled = agreement_with_labels(np.array([0, 1]), np.array([0, 0]))
    assert none_labelled.sensitivity is None and none_labelled.specificity is not None
    with pytest.raises(HarnessError, match="0/1"):
        agreement_with_labels(np.array([0.5, 1]), np.array([0, 1]))
    with pytest.raises(HarnessError, match="aligned"):
        agreement_with_labels(np.array([0, 1, 1]), np.array([0, 1]))
