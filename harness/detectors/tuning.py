"""Choosing a detector's setting by cross-validation across questions, and the held-out figure it earns.

A setting chosen on the answers it is then scored on flatters itself. Here the questions are split into
folds (a question's answers stay in one fold); each fold's answers are judged with the value that had the
best balanced accuracy on the other folds, and those held-out judgements are scored like any predictor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from harness.detectors.base import Claim, Detector
from harness.detectors.validation import LabelledClaim, Score, balanced_accuracy, score_subset


@dataclass(frozen=True)
class FoldChoice:
    fold: int
    value: float
    train_balanced_accuracy: float
    test_answers: int


@dataclass(frozen=True)
class CrossValidation:
    field: str
    grid: tuple[float, ...]
    predictor: str
    folds: tuple[FoldChoice, ...]
    scores: tuple[Score, ...]  # the held-out judgements, per reported set


def _judge_all(make: Callable[[float], Detector], grid: tuple[float, ...], claims: list[Claim],
               progress: Callable[[str], None]) -> dict[float, dict[Claim, bool]]:
    judged = {}
    for value in grid:
        progress(f"judging {len(claims)} answers with {value}")
        detector = make(value)
        try:
            judged[value] = dict(zip(claims, (f.hallucinated for f in detector.detect(claims)), strict=True))
        finally:
            detector.close()
    return judged


def cross_validate(make: Callable[[float], Detector], field: str, grid: tuple[float, ...],
                   tuning: list[LabelledClaim], report_on: dict[str, list[LabelledClaim]], name: str,
                   folds: int = 5, resamples: int = 2000, confidence: float = 0.95, seed: int = 0,
                   progress: Callable[[str], None] = print) -> CrossValidation:
    """Tune `field` over `grid` on `tuning` (folds by `group`), then score the held-out judgements on each
    set of `report_on` (subsets of `tuning`). Ties go to the value listed first."""
    judged = _judge_all(make, grid, list(dict.fromkeys(i.claim for i in tuning)), progress)
    truth = np.array([i.hallucinated for i in tuning])
    held_out: dict[Claim, bool] = {}
    choices = []
    from sklearn.model_selection import GroupKFold  # scikit-learn takes half a second to import: when tuning runs

    splits = GroupKFold(n_splits=folds).split(tuning, groups=[i.group for i in tuning])
    for fold, (train, test) in enumerate(splits):
        accuracy = {v: balanced_accuracy(np.array([judged[v][tuning[j].claim] for j in train]), truth[train])
                    for v in grid}
        best = max(grid, key=lambda v: accuracy[v])
        choices.append(FoldChoice(fold, best, float(accuracy[best]), len(test)))
        held_out.update({tuning[j].claim: judged[best][tuning[j].claim] for j in test})
    predictor = f"{name}, {field} by {folds}-fold CV (held out)"
    scores: list[Score] = []
    for subset, items in report_on.items():
        found, _ = score_subset(subset, items, {predictor: np.array([held_out[i.claim] for i in items])},
                                resamples, confidence, seed)
        scores += found
    return CrossValidation(field, grid, predictor, tuple(choices), tuple(scores))
