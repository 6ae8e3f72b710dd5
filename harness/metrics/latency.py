"""Latency and throughput of the scoring requests, with bootstrap intervals like every other metric.

Per request: TTFT, TPOT ((e2e - ttft) / (output tokens - 1), as vLLM's benchmark defines it) and
end-to-end time; their percentiles are taken over requests. Inter-token latency pools every gap of every
request, as vLLM does; its bootstrap repeats each gap as often as its request was drawn. All use
`stats.latency_percentile`, the definition `harness bench` uses too (vLLM's). Failed requests have no
latency and are left out of the reported figures (`error_rate` counts them); the gate counts them as SLO misses
(infinite latency), as vLLM's goodput does. The interval of a request percentile is distribution-free (order
statistics), so a tail percentile measured on few requests has no upper bound rather than a flattering one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from harness.metrics.base import MeanOf, Metric, Need, Resample, ScoringInput, SumStatsMetric, register
from harness.stats import latency_percentile, order_statistic_interval, order_statistic_min_n, pooled_percentile

PERCENTILES = (50, 90, 95, 99)
_NAN = float("nan")


def _per_request(data: ScoringInput, timing: str) -> np.ndarray:
    out = []
    for c in data.completions:
        if not c.ok or c.e2e_s is None:
            out.append(_NAN)
        elif timing == "ttft":
            out.append(_NAN if c.ttft_s is None else c.ttft_s * 1000)
        elif timing == "e2e":
            out.append(c.e2e_s * 1000)
        else:  # tpot
            tokens = c.completion_tokens or 0
            out.append(_NAN if c.ttft_s is None or tokens < 2 else (c.e2e_s - c.ttft_s) * 1000 / (tokens - 1))
    return np.array(out)


@dataclass(frozen=True, kw_only=True)
class _Latency(Metric):
    """What every latency metric is: computed for every task from the requests' timing."""

    family: str = "latency"
    higher_is_better: bool = False
    value_range: tuple[float, float] = (0.0, math.inf)
    decimals: int = 1
    unit: str = "ms"
    needs: frozenset[Need] = frozenset({"latency"})
    timed: bool = True


@dataclass(frozen=True, kw_only=True)
class RequestPercentile(_Latency):
    """The q-th percentile of one timing per request (`timing`: ttft, tpot or e2e)."""

    timing: str
    q: int
    compared_by_intervals: bool = True

    def stats(self, data: ScoringInput) -> np.ndarray:
        return _per_request(data, self.timing)[:, None]

    def aggregate(self, stats: np.ndarray, sample: Resample) -> np.ndarray:
        return latency_percentile(stats[sample.idx, 0], self.q)

    def per_example(self, stats: np.ndarray) -> np.ndarray:
        return stats[:, 0]

    def interval(self, stats: np.ndarray, confidence: float) -> tuple[float, float]:
        return order_statistic_interval(stats[:, 0], self.q, confidence)

    def min_n(self, confidence: float, above: bool) -> int:
        return order_statistic_min_n(self.q, confidence, upper=not above)

    def worst_case(self, stats: np.ndarray, failed: np.ndarray) -> np.ndarray:
        out = stats.copy()
        out[failed, 0] = np.inf
        return out


@dataclass(frozen=True, kw_only=True)
class InterTokenPercentile(_Latency):
    """Percentile of all inter-token gaps pooled; stats rows are (request index, gap ms), one per gap."""

    q: int

    def stats(self, data: ScoringInput) -> np.ndarray:
        rows = [(i, gap * 1000) for i, c in enumerate(data.completions) if c.ok for gap in c.itl_s]
        stats = np.array(rows, dtype=np.float64).reshape(-1, 2)
        # In the order `aggregate` needs, so that it need not sort them again for every block of resamples (the
        # blocks grow in number with the examples: a sort each made the scoring grow as n² log n).
        return stats[np.argsort(stats[:, 1], kind="stable")]

    def aggregate(self, stats: np.ndarray, sample: Resample) -> np.ndarray:
        if len(stats) == 0:
            return np.full(sample.size, _NAN)
        gaps = stats[:, 1]
        # A stable sort of sorted gaps keeps them as they are (worst_case appends infinite ones after them).
        order = slice(None) if (gaps[1:] >= gaps[:-1]).all() else np.argsort(gaps, kind="stable")
        owner, values = stats[order, 0].astype(int), stats[order, 1]
        return pooled_percentile(values, owner, sample.counts, self.q)

    def count(self, stats: np.ndarray) -> int:
        """Requests with gaps: the gaps of one request are not independent evidence."""
        return len(np.unique(stats[:, 0]))

    def min_n(self, confidence: float, above: bool) -> int:
        # Counted in requests, as a request percentile's: a tail of few requests' gaps bounds nothing.
        return order_statistic_min_n(self.q, confidence, upper=not above)

    def worst_case(self, stats: np.ndarray, failed: np.ndarray) -> np.ndarray:
        """A failed request's gaps are all infinite (it never delivered its next token), as many as an answered
        request has on average (at least one): one gap alone would be lost among the answered requests' many."""
        kept = stats[~failed[stats[:, 0].astype(int)]]
        per_request = math.ceil(len(kept) / len(np.unique(kept[:, 0]))) if len(kept) else 1
        rows = [(i, np.inf) for i in np.flatnonzero(failed) for _ in range(per_request)]
        return np.concatenate([kept, np.array(rows).reshape(-1, 2)])


@dataclass(frozen=True, kw_only=True)
class OutputTokensPerSecond(_Latency, SumStatsMetric):
    """Decoding speed seen by one request: output tokens over end-to-end seconds, summed over requests."""

    def stats(self, data: ScoringInput) -> np.ndarray:
        rows = [(c.completion_tokens or 0, c.e2e_s or 0.0) if c.ok else (0, 0.0) for c in data.completions]
        return np.array(rows, dtype=np.float64)

    def from_sums(self, sums: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return sums[:, 0] / sums[:, 1]

    def worst_case(self, stats: np.ndarray, failed: np.ndarray) -> None:
        # Unknown: a failed request waited for nothing as long as its timeout, which the run does not know.
        return None


def request_failed(data: ScoringInput) -> np.ndarray:
    """Per request: 1 where it failed."""
    return np.array([not c.ok for c in data.completions], float)


# A tail of pooled gaps has no distribution-free bound (a request's gaps are not independent of each other) and its
# bootstrap cannot exceed the gaps it saw: gate tails per request instead.
_POOLED_TAIL = ("pools every gap of every request, and no interval of its tail holds at a known confidence; "
                "name tpot_ms_pXX (per request) or e2e_ms_pXX instead")


def percentile(timing: str, q: int) -> Metric:
    """`<timing>_ms_p<q>`, filling latency.json's `<timing>_ms` series at `p<q>`."""
    name, series, statistic = f"{timing}_ms_p{q}", f"{timing}_ms", f"p{q}"
    if timing == "itl":
        return InterTokenPercentile(name=name, series=series, statistic=statistic, q=q,
                                    not_gateable=_POOLED_TAIL if q >= 90 else None)
    return RequestPercentile(name=name, series=series, statistic=statistic, timing=timing, q=q)


# Registered in the order tables and latency.json show them.
for _timing in ("ttft", "itl", "tpot", "e2e"):
    for _q in PERCENTILES:
        register(percentile(_timing, _q))
register(OutputTokensPerSecond(name="output_tokens_per_s", higher_is_better=True, unit="tokens/s",
                               series="output_tokens_per_s"))
register(MeanOf(name="error_rate", family="latency", higher_is_better=False, needs=frozenset({"latency"}),
                fn=request_failed))
