"""Classification: answers parsed into the label set, then accuracy, macro/micro F1 and invalid-label rate.

F1 follows scikit-learn's definitions over the labels that occur in the references or in the valid
predictions; an invalid answer is a miss for its true label and a false positive for no label.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from harness.metrics.base import MeanOf, Need, ScoringInput, SumStatsMetric, register

_STRIP = re.compile(r"^[\s\"'`*.:,;!()\[\]-]+|[\s\"'`*.:,;!()\[\]-]+$")


def normalise_label(text: str) -> str:
    text = _STRIP.sub("", text.strip().lower())
    return re.sub(r"[\s\-/]+", "_", text)


def parse_label(text: str, labels: list[str]) -> str | None:
    """The label an answer names, or None when it names none.

    The first non-empty line is normalised (case, surrounding punctuation, spaces and hyphens as
    underscores) and must equal a normalised label; failing that, the longest label it contains as a
    whole word sequence is taken ("The intent is card_arrival." names card_arrival).
    """
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return None
    first = normalise_label(lines[0])
    by_norm = _by_normalised(tuple(labels))
    if first in by_norm:
        return by_norm[first]
    padded = f"_{first}_"
    contained = [norm for norm in by_norm if f"_{norm}_" in padded]
    return by_norm[max(contained, key=len)] if contained else None


@lru_cache(maxsize=64)
def _by_normalised(labels: tuple[str, ...]) -> dict[str, str]:
    """Normalised label -> label, built once per label set rather than once per answer (a task's every answer
    is parsed against the same labels; rebuilding this dominated scoring at 10k answers)."""
    return {normalise_label(lab): lab for lab in labels}


def predictions(data: ScoringInput) -> list[str | None]:
    assert data.labels is not None
    return [parse_label(t, data.labels) for t in data.texts]


def correct(data: ScoringInput) -> np.ndarray:
    """Per answer: 1 where it names the reference label."""
    return np.array([p == e.reference for p, e in zip(predictions(data), data.examples, strict=True)], float)


def invalid(data: ScoringInput) -> np.ndarray:
    """Per answer: 1 where it names no label."""
    return np.array([p is None for p in predictions(data)], float)


register(MeanOf(name="accuracy", family="classification", needs=frozenset({"labels", "reference"}), fn=correct))
register(MeanOf(name="invalid_label_rate", family="classification", higher_is_better=False,
                needs=frozenset({"labels"}), fn=invalid))


def confusion_stats(data: ScoringInput) -> np.ndarray:
    """Per example: one-hot true positives, false positives and false negatives over the label set."""
    assert data.labels is not None
    index = {lab: i for i, lab in enumerate(data.labels)}
    k = len(index)
    out = np.zeros((len(data.examples), 3 * k))
    for row, (pred, ex) in enumerate(zip(predictions(data), data.examples, strict=True)):
        true = index[str(ex.reference)]
        if pred == ex.reference:
            out[row, true] = 1
        else:
            out[row, 2 * k + true] = 1
            if pred is not None:
                out[row, k + index[pred]] = 1
    return out


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    denom = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)


@dataclass(frozen=True, kw_only=True)
class _ConfusionF1(SumStatsMetric):
    family: str = "classification"
    needs: frozenset[Need] = frozenset({"labels", "reference"})

    def stats(self, data: ScoringInput) -> np.ndarray:
        return confusion_stats(data)

    def worst_case(self, stats: np.ndarray, failed: np.ndarray) -> np.ndarray:
        """A failed row is a wrong label: a miss for its true label and a false positive for another (lower than an
        invalid answer's miss alone), the false positives placed where they lower the metric most."""
        k = stats.shape[1] // 3
        rows = np.flatnonzero(failed)
        true = np.argmax(stats[rows, :k] + stats[rows, 2 * k:], axis=1)  # a row counts its true label once
        out = stats.copy()
        out[rows] = 0
        out[rows, 2 * k + true] = 1
        if k < 2:  # a single label: no wrong one to name
            return out
        cap = len(rows) - np.bincount(true, minlength=k)  # no row names its own label
        slots = np.repeat(np.arange(k), self._worst_false_positives(out.sum(axis=0), cap, len(rows)).astype(int))
        # The rows matched to those false positives, none to its own label (possible: no label takes more than the
        # rows of other labels give).
        # scipy.optimize takes a third of a second to import: loaded when a failure is scored, not by every import of
        # the registry (the dashboard's pages among them).
        from scipy.optimize import linear_sum_assignment

        _, order = linear_sum_assignment(slots[None, :] == true[:, None])
        out[rows, k + slots[order]] = 1
        return out

    def _worst_false_positives(self, sums: np.ndarray, cap: np.ndarray, m: int) -> np.ndarray:
        """How many false positives each label takes (at most `cap`, `m` in all) to lower the metric most:
        for each number of unseen labels opened (each adds an F1 of 0 to the macro mean), the rest one at a time
        where one lowers it most (exact for a sum of per-label terms convex in their false positives, the labels
        present fixed); the lowest of these."""
        k = len(cap)
        unseen = np.flatnonzero(sums.reshape(3, k).sum(axis=0) == 0)
        best, lowest = np.zeros(k), np.inf
        for opened in range(min(m, len(unseen)) + 1):
            fps = np.isin(np.arange(k), unseen[:opened]).astype(float)
            allowed = np.isin(np.arange(k), unseen[opened:], invert=True)
            if allowed.sum() < 2:  # the failed rows' one true label alone: none of them can be placed
                continue
            for _ in range(m - opened):
                one_more = sums + np.pad(fps, k) + np.eye(k, 3 * k, k)  # with one more false positive on each label
                fps[np.argmin(np.where(allowed & (fps < cap), self.from_sums(one_more), np.inf))] += 1
            if (value := float(self.from_sums((sums + np.pad(fps, k))[None])[0])) < lowest:
                best, lowest = fps, value
        return best


class MacroF1(_ConfusionF1):
    def from_sums(self, sums: np.ndarray) -> np.ndarray:
        tp, fp, fn = np.split(sums, 3, axis=1)
        present = (tp + fp + fn) > 0
        f1 = _f1(tp, fp, fn)
        return (f1 * present).sum(axis=1) / np.maximum(present.sum(axis=1), 1)


class MicroF1(_ConfusionF1):
    def from_sums(self, sums: np.ndarray) -> np.ndarray:
        tp, fp, fn = (part.sum(axis=1) for part in np.split(sums, 3, axis=1))
        return _f1(tp, fp, fn)


register(MacroF1(name="macro_f1"))
register(MicroF1(name="micro_f1"))


def per_class_f1(data: ScoringInput) -> dict[str, float]:
    """F1 of each label that occurs in the references or predictions (for reports and the dashboard)."""
    assert data.labels is not None
    tp, fp, fn = np.split(confusion_stats(data).sum(axis=0), 3)
    return {lab: float(f) for lab, f, t, p, n in zip(data.labels, _f1(tp, fp, fn), tp, fp, fn, strict=True)
            if t + p + n > 0}

