import numpy as np
import pytest
from scipy import stats as scipy_stats

from harness.metrics import get_metric
from harness.stats import bootstrap, resample_blocks
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
