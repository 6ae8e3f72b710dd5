import numpy as np
import pytest

from harness.metrics import get_metric
from harness.metrics.base import Resample
from tests.helpers import scoring_input

TTFT = [0.10, 0.20, 0.15, 0.50, 0.30]
E2E = [1.0, 2.0, 1.5, 3.0, 2.5]
TOKENS = [10, 20, 6, 31, 1]
ITL = [[0.1, 0.2], [0.05], [0.3, 0.1, 0.2], [], [0.4]]


def _data(errors=None):
    return scoring_input(["x"] * 5, ["x"] * 5, errors=errors, ttft_s=TTFT, e2e_s=E2E, completion_tokens=TOKENS,
                         itl_s=ITL)


def _value(name, data):
    metric = get_metric(name)
    return metric.value(metric.stats(data), len(data.examples))


@pytest.mark.parametrize("q", [50, 90, 95, 99])
def test_request_percentiles_match_numpy(q):
    data = _data()
    assert _value(f"ttft_ms_p{q}", data) == pytest.approx(np.percentile(np.array(TTFT) * 1000, q))
    assert _value(f"e2e_ms_p{q}", data) == pytest.approx(np.percentile(np.array(E2E) * 1000, q))


def test_tpot_by_hand():
    # (e2e - ttft) / (tokens - 1); a one-token answer has no TPOT.
    tpot = [(e - t) * 1000 / (n - 1) for t, e, n in zip(TTFT, E2E, TOKENS, strict=True) if n > 1]
    assert _value("tpot_ms_p50", _data()) == pytest.approx(np.percentile(tpot, 50))


def test_itl_pools_all_gaps():
    gaps = np.array([g for gs in ITL for g in gs]) * 1000
    for q in (50, 90, 99):
        assert _value(f"itl_ms_p{q}", _data()) == pytest.approx(np.percentile(gaps, q))


def test_itl_resample_repeats_gaps_by_request():
    metric = get_metric("itl_ms_p50")
    stats = metric.stats(_data())
    idx = np.array([[2, 2, 2, 0, 4], [3, 3, 3, 3, 3]])
    gaps = np.array([0.3, 0.1, 0.2] * 3 + [0.1, 0.2] + [0.4]) * 1000
    got = metric.aggregate(stats, Resample(idx))
    assert got[0] == pytest.approx(np.percentile(gaps, 50)) and np.isnan(got[1])  # request 3 has no gaps


def test_runs_and_bench_compute_the_same_percentiles():
    """One definition (vLLM's: numpy's linear interpolation) in a run's metrics and in `harness bench`."""
    from harness.bench import PERCENTILES, LoadLevel, Targets, summarise

    data = _data()
    level = summarise(LoadLevel(1), data.completions, 10.0, Targets(), 0.0)
    for field in ("ttft", "tpot", "itl", "e2e"):
        summary = getattr(level, f"{field}_ms")
        for q in PERCENTILES:
            assert _value(f"{field}_ms_p{q}", data) == pytest.approx(summary[f"p{q}"]), (field, q)


def test_failed_requests_are_left_out_of_latency_and_counted():
    data = _data(errors=[None, None, None, None, "timeout"])
    assert _value("e2e_ms_p50", data) == pytest.approx(np.percentile(np.array(E2E[:4]) * 1000, 50))
    assert _value("error_rate", data) == pytest.approx(0.2)


def test_output_tokens_per_second():
    assert _value("output_tokens_per_s", _data()) == pytest.approx(sum(TOKENS) / sum(E2E))
