import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from harness.metrics import get_metric
from harness.stats import bootstrap, latency_percentile, pooled_percentile, repeated_percentile, resample_blocks
from tests.helpers import scoring_input


def test_resamples_depend_only_on_seed():
    def idx(seed):
        return np.concatenate([s.idx for s in resample_blocks(50, 300, seed=seed)])

    assert idx(7).shape == (300, 50)
    assert (idx(7) == idx(7)).all()
    assert not (idx(7) == idx(8)).all()


def test_mean_interval_agrees_with_scipy_percentile_bootstrap():
    rng = np.random.default_rng(1)
    correct = (rng.random(400) < 0.7).astype(int)
    refs = ["a"] * 400
    texts = ["a" if c else "b" for c in correct]
    data = scoring_input(texts, refs)
    metric = get_metric("exact_match")
    ours = bootstrap(metric, metric.stats(data), 400, resamples=4000, seed=0)
    ref = scipy_stats.bootstrap((correct,), np.mean, n_resamples=4000, method="percentile", random_state=0)
    assert ours.value == pytest.approx(correct.mean())
    assert ours.low == pytest.approx(ref.confidence_interval.low, abs=0.01)
    assert ours.high == pytest.approx(ref.confidence_interval.high, abs=0.01)
    assert ours.low < ours.value < ours.high


def test_interval_narrows_with_more_examples():
    def width(n):
        data = scoring_input(["a", "b"] * (n // 2), ["a"] * n)
        metric = get_metric("exact_match")
        iv = bootstrap(metric, metric.stats(data), n, resamples=1000, seed=0)
        return iv.high - iv.low

    assert width(1000) < width(100) / 2


def test_blocks_do_not_change_the_result(monkeypatch):
    data = scoring_input(["a", "b", "a", "a"] * 30, ["a"] * 120)
    metric = get_metric("exact_match")
    whole = bootstrap(metric, metric.stats(data), 120, resamples=500, seed=3)
    monkeypatch.setattr("harness.stats._BLOCK_ELEMENTS", 120 * 7)
    blocked = bootstrap(metric, metric.stats(data), 120, resamples=500, seed=3)
    assert whole == blocked


def _draws_for(metric, stats_by_cand, n, resamples=1000, seed=0):
    from harness.stats import draws

    return draws(metric, stats_by_cand, n, resamples, seed)


def test_paired_difference_uses_mcnemar_for_accuracy():
    from scipy.stats import binomtest

    from harness.stats import paired_difference

    a_right = np.array([1] * 60 + [0] * 40)
    b_right = np.array([1] * 45 + [0] * 15 + [1] * 5 + [0] * 35)  # 15 only-A, 5 only-B discordant pairs
    metric = get_metric("exact_match")
    sa = metric.stats(scoring_input(["a" if r else "x" for r in a_right], ["a"] * 100))
    sb = metric.stats(scoring_input(["a" if r else "x" for r in b_right], ["a"] * 100))
    d = _draws_for(metric, {"a": sa, "b": sb}, 100)
    diff = paired_difference(metric, sa, sb, 100, d["a"], d["b"])
    assert diff.delta == pytest.approx(0.60 - 0.50)
    assert diff.low < diff.delta < diff.high
    assert diff.test == "mcnemar"
    assert diff.p_value == pytest.approx(binomtest(15, 20, 0.5).pvalue)


def test_paired_interval_is_narrower_than_unpaired_for_correlated_candidates():
    rng = np.random.default_rng(5)
    base = rng.random(400) < 0.6
    better = base | (rng.random(400) < 0.1)  # the same answers, plus some fixed
    metric = get_metric("exact_match")
    sa = metric.stats(scoring_input(["a" if r else "x" for r in better], ["a"] * 400))
    sb = metric.stats(scoring_input(["a" if r else "x" for r in base], ["a"] * 400))
    d = _draws_for(metric, {"a": sa, "b": sb}, 400)
    from harness.stats import paired_difference, percentile_interval

    paired = paired_difference(metric, sa, sb, 400, d["a"], d["b"])
    (al, ah), (bl, bh) = percentile_interval(d["a"], 0.95), percentile_interval(d["b"], 0.95)
    assert paired.high - paired.low < ((ah - al) ** 2 + (bh - bl) ** 2) ** 0.5
    assert paired.low > 0


def test_bootstrap_p_value_for_identical_candidates_is_one():
    from harness.stats import paired_difference

    metric = get_metric("token_f1")
    s = metric.stats(scoring_input(["a b c", "a", "b c"] * 20, ["a b", "a c", "c"] * 20))
    d = _draws_for(metric, {"a": s, "b": s}, 60)
    diff = paired_difference(metric, s, s, 60, d["a"], d["b"])
    assert diff.test == "paired_bootstrap" and diff.delta == 0 and diff.p_value == 1.0


def test_paired_intervals_cover_the_true_difference_95_percent_of_the_time():
    """Simulation: two correlated classifiers with known accuracies 0.75 and 0.70."""
    from harness.stats import draws, paired_difference

    metric = get_metric("exact_match")
    rng = np.random.default_rng(11)
    n, simulations, covered = 300, 300, 0
    for sim in range(simulations):
        shared = rng.random(n)
        a = shared < 0.75
        b = np.where(rng.random(n) < 0.5, shared < 0.70, rng.random(n) < 0.70)
        sa = np.stack([a.astype(float), np.ones(n)], axis=1)
        sb = np.stack([b.astype(float), np.ones(n)], axis=1)
        d = draws(metric, {"a": sa, "b": sb}, n, 500, seed=sim)
        diff = paired_difference(metric, sa, sb, n, d["a"], d["b"])
        covered += diff.low <= 0.05 <= diff.high
    coverage = covered / simulations
    assert 0.91 <= coverage <= 0.99, coverage


LABELS4 = ["a", "b", "c", "d"]
PRIOR4 = np.array([0.4, 0.3, 0.2, 0.1])


def _confusion(right: list[float]) -> np.ndarray:
    """P(predicted | true): the right label with the given probability, else one of the others evenly."""
    m = np.array([[(1 - r) / 3] * 4 for r in right])
    np.fill_diagonal(m, right)
    return m


def _population_macro_f1(confusion: np.ndarray) -> float:
    joint = PRIOR4[:, None] * confusion
    return float(np.mean(2 * np.diag(joint) / (joint.sum(axis=0) + joint.sum(axis=1))))


def _classify(rng, truth: np.ndarray, confusion: np.ndarray) -> np.ndarray:
    return (rng.random(len(truth))[:, None] > confusion.cumsum(axis=1)[truth]).sum(axis=1)


def test_single_candidate_intervals_cover_the_population_value_95_percent_of_the_time():
    """Simulation: one classifier with known per-class accuracy on four unbalanced classes (the smallest
    a tenth of the data); the intervals of accuracy (a mean) and of macro-F1 (not decomposable per example,
    and biased in small samples) each cover the population value in 92–98% of 400 samples of 300."""
    from harness.stats import draws, interval

    confusion = _confusion([0.85, 0.7, 0.6, 0.5])
    truths = {"accuracy": float(PRIOR4 @ np.diag(confusion)), "macro_f1": _population_macro_f1(confusion)}
    rng = np.random.default_rng(5)
    n, simulations = 300, 400
    covered = dict.fromkeys(truths, 0)
    for sim in range(simulations):
        truth = rng.choice(4, n, p=PRIOR4)
        predicted = _classify(rng, truth, confusion)
        data = scoring_input([LABELS4[i] for i in predicted], [LABELS4[i] for i in truth], labels=LABELS4)
        for name, true_value in truths.items():
            metric = get_metric(name)
            stats = metric.stats(data)
            iv = interval(metric.value(stats, n), draws(metric, {"x": stats}, n, 500, seed=sim)["x"], 0.95)
            covered[name] += iv.low <= true_value <= iv.high
    for name, count in covered.items():
        assert 0.92 <= count / simulations <= 0.98, (name, count / simulations)


def test_paired_macro_f1_intervals_cover_the_true_difference():
    """Simulation: B answers as A on a random half of the examples and from its own weaker confusion on the
    rest, so the two are correlated as a fine-tune and its base are; the paired macro-F1 difference's
    interval covers the population difference in 92–98% of 400 samples."""
    from harness.stats import draws, paired_difference

    a, own_b = _confusion([0.85, 0.7, 0.6, 0.5]), _confusion([0.8, 0.7, 0.5, 0.4])
    true_delta = _population_macro_f1(a) - _population_macro_f1(0.5 * a + 0.5 * own_b)
    metric = get_metric("macro_f1")
    rng = np.random.default_rng(6)
    n, simulations, covered = 300, 400, 0
    for sim in range(simulations):
        truth = rng.choice(4, n, p=PRIOR4)
        pa = _classify(rng, truth, a)
        pb = np.where(rng.random(n) < 0.5, pa, _classify(rng, truth, own_b))
        refs = [LABELS4[i] for i in truth]
        sa = metric.stats(scoring_input([LABELS4[i] for i in pa], refs, labels=LABELS4))
        sb = metric.stats(scoring_input([LABELS4[i] for i in pb], refs, labels=LABELS4))
        d = draws(metric, {"a": sa, "b": sb}, n, 500, seed=sim)
        diff = paired_difference(metric, sa, sb, n, d["a"], d["b"])
        covered += diff.low <= true_delta <= diff.high
    assert 0.92 <= covered / simulations <= 0.98, covered / simulations


def test_holm_by_hand():
    from harness.stats import holm

    # sorted: 0.01*3 = 0.03; 0.03*2 = 0.06; 0.04*1 = 0.04 -> monotone 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]


def test_examples_needed_by_hand():
    from harness.stats import examples_needed

    # half-width 0.1 at n=100, gap 0.05: (0.1 / 0.05)^2 * 100 = 400
    assert examples_needed(100, 0.75, 0.95, 0.85, 0.80) == 400
    assert examples_needed(100, 0.7, 0.9, 0.8, 0.8) is None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(0, 1e4, allow_nan=False), min_size=1, max_size=12).flatmap(
    lambda values: st.tuples(st.just(sorted(values)),
                             st.lists(st.integers(0, 5), min_size=len(values), max_size=len(values)))),
       st.sampled_from([0, 1, 50, 90, 95, 99, 100]))
def test_repeated_percentile_is_the_percentile_of_the_repeats(values_counts, q):
    values, counts = values_counts
    got = repeated_percentile(np.array(values), np.array([counts], float), q)[0]
    repeated = np.repeat(values, counts)
    if len(repeated) == 0:
        assert np.isnan(got)
    else:
        assert got == pytest.approx(np.percentile(repeated, q), rel=1e-9, abs=1e-9)
        assert got == pytest.approx(latency_percentile(repeated, q), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("slice_values", [1, 7, 1 << 18])
def test_pooled_percentile_is_the_repeated_percentile_of_the_owners_counts(monkeypatch, slice_values):
    """Inter-token gaps pooled over requests: each gap counted as often as its request was drawn, the rows taken a
    few at a time (slices of one row, of several, all at once) with the same figures as the whole matrix."""
    import harness.stats

    monkeypatch.setattr(harness.stats, "_POOLED_SLICE", slice_values)
    rng = np.random.default_rng(3)
    for _ in range(200):
        n, gaps, rows = (int(x) for x in rng.integers(1, 30, 3))
        values = np.sort(np.where(rng.random(gaps) < 0.1, np.inf, rng.random(gaps) * 100))
        owner = rng.integers(0, n, gaps)
        counts = rng.integers(0, 4, (rows, n)).astype(float)
        counts[rng.random(rows) < 0.2] = 0
        for q in (0, 50, 90, 99, 100):
            expected = repeated_percentile(values, counts[:, owner], q)
            assert np.array_equal(pooled_percentile(values, owner, counts, q), expected, equal_nan=True)


@pytest.mark.parametrize("probs", [(0.02, 0.05, 0.18, 0.48, 0.27), (0.3, 0.0, 0.0, 0.0, 0.7),
                                   (0.0, 0.0, 0.05, 0.05, 0.9)])
def test_bounded_mean_intervals_cover_a_rating_mean_at_small_n(probs):
    """Ratings of 20 answers from skewed 1-5 populations: the interval covers the true mean at least as often as
    asked (a percentile bootstrap of such samples undercovers, most where nearly every rating is a 5)."""
    from harness.stats import bounded_mean_interval

    rng = np.random.default_rng(7)
    mean = float(np.dot(np.arange(1, 6), probs))
    covered = [lo <= mean <= hi for lo, hi in (
        bounded_mean_interval(rng.choice(np.arange(1, 6), 20, p=probs).astype(float), 1, 5, 0.95)
        for _ in range(300))]
    assert np.mean(covered) >= 0.94


def test_the_betting_interval_is_the_same_when_its_grid_is_taken_in_slices(monkeypatch):
    """The grid of candidate means is searched a slice at a time (memory bounded as n grows): any slicing gives the
    interval the whole grid gives."""
    import harness.stats

    values = np.random.default_rng(5).choice(np.arange(1, 6), 3000, p=(0.1, 0.1, 0.2, 0.3, 0.3)).astype(float)
    monkeypatch.setattr(harness.stats, "_BLOCK_ELEMENTS", 3000 * 2000)
    whole = harness.stats.bounded_mean_interval(values, 1, 5, 0.95)
    for elements in (3000, 3000 * 7, 3000 * 2000 // 3):  # one mean a slice, seven, a third of the grid
        monkeypatch.setattr(harness.stats, "_BLOCK_ELEMENTS", elements)
        assert harness.stats.bounded_mean_interval(values, 1, 5, 0.95) == whole
    assert 3.4 < whole[0] < whole[1] < 3.8
