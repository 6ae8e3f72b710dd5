"""Output drift: what the model answers. Answer lengths, and for classification the distribution of the
labels it predicts (abstention, invalid-label and quality rates come from the task's own metrics)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from harness.drift.base import DetailTable, DriftInput, DriftSignal, Measurement, register, relative_change
from harness.drift.inputs import words

INVALID = "(invalid)"


@register
class AnswerLengthChange(DriftSignal):
    name = "answer_length_change"
    needs = frozenset({"outputs"})
    description = "relative change of the mean answer length in words (0: none)"
    default_rules = ({"at_least": -0.5}, {"at_most": 1.0})

    def measure(self, inp: DriftInput) -> Measurement:
        assert inp.reference.outputs is not None and inp.traffic.outputs is not None
        ref = np.array([len(words(t)) for t in inp.reference.outputs], float)
        new = np.array([len(words(t)) for t in inp.traffic.outputs], float)
        if ref.mean() == 0:
            return Measurement(float("nan"), evidence="the reference answers are empty")
        return relative_change(ref, new, inp, self.name)


@register
class LabelShift(DriftSignal):
    """Total variation distance between the predicted-label distributions, with a permutation test (exact in
    its null, so sparse labels need no chi-square approximation). Invalid answers are a category of their own."""

    name = "label_shift"
    kind = "test"
    needs = frozenset({"labels"})
    description = "total variation distance of predicted-label shares; permutation-test p-value"
    default_rules = ({"p_below": 0.01},)

    def measure(self, inp: DriftInput) -> Measurement:
        assert inp.reference.labels is not None and inp.traffic.labels is not None
        ref = [lab or INVALID for lab in inp.reference.labels]
        new = [lab or INVALID for lab in inp.traffic.labels]
        names = sorted(set(ref) | set(new))
        code = {n: i for i, n in enumerate(names)}
        pooled = np.array([code[x] for x in ref + new])
        k, n_ref = len(names), len(ref)
        observed = _tvd(pooled[None, :], n_ref, k)[0]
        rng = inp.rng(self.name)
        perms = np.argsort(rng.random((inp.resamples, len(pooled))), axis=1)
        null = _tvd(pooled[perms], n_ref, k)
        p = float((1 + (null >= observed - 1e-12).sum()) / (1 + inp.resamples))
        ref_share, new_share = _shares(ref), _shares(new)
        moves = sorted(names, key=lambda n: -abs(new_share.get(n, 0) - ref_share.get(n, 0)))[:8]
        changes = [{"label": n, "traffic": round(new_share.get(n, 0), 4), "reference": round(ref_share.get(n, 0), 4)}
                   for n in moves]
        top = ", ".join(f"{c['label']} {c['reference']:.0%}→{c['traffic']:.0%}" for c in changes[:3])
        return Measurement(float(observed), p_value=p, evidence=f"TVD {observed:.3f}, p={p:.3g}; moved most: {top}",
                           detail={"label_changes": changes})

    def rows_behind(self, inp: DriftInput, m: Measurement) -> list[int]:
        grown = [c["label"] for c in m.detail.get("label_changes", []) if c["traffic"] > c["reference"]][:1]
        return [i for i, label in enumerate(inp.traffic.labels or []) if (label or INVALID) in grown]

    def tables(self, detail: dict[str, Any]) -> list[DetailTable]:
        return [DetailTable("Predicted labels that moved most (share of messages)", ("label", "reference", "traffic"),
                            detail.get("label_changes", []))]


def _shares(labels: list[str]) -> dict[str, float]:
    return {k: v / len(labels) for k, v in Counter(labels).items()}


def _tvd(codes: np.ndarray, n_ref: int, k: int) -> np.ndarray:
    """Per row of codes (b, n): TVD between the label shares of the first n_ref and the rest."""
    b, n = codes.shape
    offsets = (np.arange(b) * k)[:, None]
    ref = np.bincount((codes[:, :n_ref] + offsets).ravel(), minlength=b * k).reshape(b, k) / n_ref
    new = np.bincount((codes[:, n_ref:] + offsets).ravel(), minlength=b * k).reshape(b, k) / (n - n_ref)
    return 0.5 * np.abs(ref - new).sum(axis=1)
