"""A machine-scored metric corrected by reviewers' labels: `<metric>_corrected` (a detector's rate, a judge's score),
the prediction-powered estimate (harness.ppi) from the machine's value of every answer and reviewers' labels of a
uniformly random few (harness.labels). Like the human metrics it comes from reviewers, not from the answers: the
gate resolves it from the labels, and a manifest criterion names it like any metric."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.metrics.base import MeanMetric, Metric, Need, ScoringInput, register


@dataclass(frozen=True, kw_only=True)
class CorrectedMetric(MeanMetric):
    reads: str  # the machine-scored metric it corrects
    family: str = "corrected"
    needs: frozenset[Need] = frozenset({"ratings"})

    def values(self, data: ScoringInput) -> np.ndarray:
        raise TypeError(f"{self.name} comes from reviewers' labels and {self.reads}, not from answers alone")


def corrected(metric: Metric) -> CorrectedMetric:
    """The corrected twin of a metric reviewers can label: same direction, range and precision."""
    return CorrectedMetric(name=f"{metric.name}_corrected", reads=metric.name, higher_is_better=metric.higher_is_better,
                           value_range=metric.value_range, decimals=metric.decimals)


def register_corrected(metric: Metric) -> None:
    register(corrected(metric))
