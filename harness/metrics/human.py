"""Reviewers' judgements as metrics: the mean 1–5 rating and the win share in blind comparisons.

They come from the ratings database (harness.ratings, written by the dashboard's Review page), not from
the answers, so the gate resolves them from ratings; a manifest criterion names them like any metric.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass

import numpy as np

from harness.metrics.base import MeanMetric, Need, ScoringInput, register
from harness.ratings import HumanRatings, item_means, item_wins


@dataclass(frozen=True, kw_only=True)
class RatingMetric(MeanMetric):
    family: str = "human"
    needs: frozenset[Need] = frozenset({"ratings"})
    # A task metric whose per-example values the ratings are compared with (a judge's agreement), if any.
    reads: str | None = None

    def values(self, data: ScoringInput) -> np.ndarray:
        raise TypeError(f"{self.name} comes from reviewers' ratings, not from answers")

    @abstractmethod
    def rated_values(self, human: HumanRatings, task: str, candidate: str,
                     judged: dict[str, float] | None = None) -> np.ndarray:
        """One value per rated example of the candidate on the task (`judged`: the `reads` metric by example)."""


class HumanRating(RatingMetric):
    def rated_values(self, human: HumanRatings, task: str, candidate: str,
                     judged: dict[str, float] | None = None) -> np.ndarray:
        return item_means([s for s in human.scores if s.task == task], candidate)


class HumanWinRate(RatingMetric):
    def rated_values(self, human: HumanRatings, task: str, candidate: str,
                     judged: dict[str, float] | None = None) -> np.ndarray:
        return item_wins([p for p in human.preferences if p.task == task], candidate)


register(HumanRating(name="human_rating", decimals=2, value_range=(1.0, 5.0)))
# A blind comparison pits the candidate against whichever candidate was shown beside it.
register(HumanWinRate(name="human_win_rate", rivals=("*",)))
