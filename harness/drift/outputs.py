"""Output drift: what the model answers. Answer lengths, and for classification the distribution of the
labels it predicts (abstention, invalid-label and quality rates come from the task's own metrics)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
from scipy.stats import norm

from harness.drift.base import (
    DetailTable,
    DriftInput,
    Measurement,
    Side,
    StreamedSignal,
    histogram_mean,
    register,
    relative_change,
)
from harness.drift.inputs import words
from harness.stats import percentile_interval

INVALID = "(invalid)"


@register
class AnswerLengthChange(StreamedSignal[Counter[int], Counter[int]]):
    name = "answer_length_change"
    needs = frozenset({"outputs"})
    description = "relative change of the mean answer length in words (0: none)"
    default_rules = ({"at_least": -0.5}, {"at_most": 1.0})

    def prepare(self, inp: DriftInput) -> Counter[int]:
        return Counter(len(words(t)) for t in inp.reference.outputs or [])

    def summarize(self, traffic: Side, reference: Counter[int]) -> Counter[int]:
        return Counter(len(words(t)) for t in traffic.outputs or [])

    def merge(self, a: Counter[int], b: Counter[int]) -> Counter[int]:
        return a + b

    def compare(self, inp: DriftInput, reference: Counter[int], traffic: Counter[int]) -> Measurement:
        if histogram_mean(reference) == 0:
            return Measurement(float("nan"), evidence="the reference answers are empty")
        return relative_change(reference, traffic, inp, self.name)


@register
class LabelShift(StreamedSignal[Counter[str], Counter[str]]):
    """Total variation distance (TVD) between the predicted-label distributions: the share of traffic that would
    have to change label to look like the reference. Invalid answers are a category of their own.

    The plug-in TVD is biased upwards (sampling noise alone gives 0.1 on a thousand rows over 77 labels), so its
    interval is built to be sound at every size: the lower bound from a split in halves (the labels that grew, chosen
    on one half, measured on the other: a lower bound of the TVD, with a normal interval), the upper bound a bootstrap
    percentile of the plug-in value. A permutation-test p-value (from the counts: hypergeometric draws, exact in its
    null) stands beside it for rules written with p_below."""

    name = "label_shift"
    gives_p_value = True
    needs = frozenset({"labels"})
    description = "total variation distance of predicted-label shares, split-half/bootstrap interval; permutation p"
    default_rules = ({"at_most": 0.2},)

    def prepare(self, inp: DriftInput) -> Counter[str]:
        return Counter(lab or INVALID for lab in inp.reference.labels or [])

    def summarize(self, traffic: Side, reference: Counter[str]) -> Counter[str]:
        return Counter(lab or INVALID for lab in traffic.labels or [])

    def merge(self, a: Counter[str], b: Counter[str]) -> Counter[str]:
        return a + b

    def compare(self, inp: DriftInput, reference: Counter[str], traffic: Counter[str]) -> Measurement:
        names = sorted(set(reference) | set(traffic))
        ref = np.array([reference[n] for n in names], np.int64)
        new = np.array([traffic[n] for n in names], np.int64)
        observed = float(_tvd(ref, new))
        rng = inp.rng(self.name)
        # Permutations of the pooled rows, as counts: the traffic side of each is a hypergeometric draw.
        permuted = rng.multivariate_hypergeometric(ref + new, int(new.sum()), size=inp.resamples)
        null = _tvd(ref + new - permuted, permuted)
        p = float((1 + (null >= observed - 1e-12).sum()) / (1 + inp.resamples))
        boot = _tvd(rng.multinomial(ref.sum(), ref / ref.sum(), size=inp.resamples),
                    rng.multinomial(new.sum(), new / new.sum(), size=inp.resamples))
        high = percentile_interval(boot, inp.confidence)[1]
        low = _split_half_lower_bound(ref, new, inp.confidence, rng)
        ref_share = {n: c / ref.sum() for n, c in zip(names, ref, strict=True)}
        new_share = {n: c / new.sum() for n, c in zip(names, new, strict=True)}
        moves = sorted(names, key=lambda n: -abs(new_share[n] - ref_share[n]))[:8]
        changes = [{"label": n, "traffic": round(new_share[n], 4), "reference": round(ref_share[n], 4)}
                   for n in moves]
        top = ", ".join(f"{c['label']} {c['reference']:.0%}→{c['traffic']:.0%}" for c in changes[:3])
        return Measurement(observed, min(low, observed), max(high, observed), p,
                           evidence=f"TVD {observed:.3f} (sampling noise alone gives about {null.mean():.3f}), "
                                    f"p={p:.3g}; moved most: {top}",
                           detail={"label_changes": changes})

    def rows_behind(self, inp: DriftInput, m: Measurement) -> list[int]:
        grown = [c["label"] for c in m.detail.get("label_changes", []) if c["traffic"] > c["reference"]][:1]
        return [i for i, label in enumerate(inp.traffic.labels or []) if (label or INVALID) in grown]

    def tables(self, detail: dict[str, Any]) -> list[DetailTable]:
        return [DetailTable("Predicted labels that moved most (share of messages)", ("label", "reference", "traffic"),
                            detail.get("label_changes", []))]


def _tvd(ref: np.ndarray, new: np.ndarray) -> np.ndarray:
    """TVD between the shares of label counts, per row of (…, k) count arrays."""
    return 0.5 * np.abs(ref / ref.sum(axis=-1, keepdims=True) - new / new.sum(axis=-1, keepdims=True)).sum(axis=-1)


def _split_half_lower_bound(ref: np.ndarray, new: np.ndarray, confidence: float, rng: np.random.Generator) -> float:
    """A lower confidence bound of the TVD: TVD = max over label sets A of P(A) - Q(A), so the set of labels that
    grew in one random half of each side, measured on the other halves, gives P(A) - Q(A) <= TVD without the
    selection's bias; its normal lower bound at the interval's level is a sound one for the TVD."""
    if ref.sum() < 2 or new.sum() < 2:
        return 0.0
    ref_a = rng.multivariate_hypergeometric(ref, int(ref.sum()) // 2)
    new_a = rng.multivariate_hypergeometric(new, int(new.sum()) // 2)
    ref_b, new_b = ref - ref_a, new - new_a
    grew = new_a / new_a.sum() > ref_a / ref_a.sum()
    p, q = new_b[grew].sum() / new_b.sum(), ref_b[grew].sum() / ref_b.sum()
    se = np.sqrt(p * (1 - p) / new_b.sum() + q * (1 - q) / ref_b.sum())
    return float(max(0.0, p - q - norm.ppf((1 + confidence) / 2) * se))
