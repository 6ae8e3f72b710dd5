"""Hallucination and abstention rates from a detector's per-example findings (harness/detectors).

The evaluation stage runs the task's detector (suite `detector:`, default `grounding`) and hands its findings in;
without findings (a metric used on its own) the default grounding rule decides. An answer the detector gave no
verdict on (a judge's reply without one, a failed request) is left out of both rates, never counted as
supported, and counted in `detector_unparsed`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from harness.detectors.grounding import GroundingDetector
from harness.metrics.base import Labelling, MeanMetric, Need, ScoringInput, register
from harness.metrics.corrected import register_corrected
from harness.records import Claim, Finding


def claims_of(data: ScoringInput) -> list[Claim]:
    """What a detector judges: each answer with the task's source passage, the other inputs as the question,
    and the references."""
    source = data.task.source or ""
    claims = []
    for ex, text in zip(data.examples, data.texts, strict=True):
        question = " ".join(v for k, v in ex.inputs.items() if k != source)
        claims.append(Claim(text, ex.inputs.get(source, ""), question, tuple(ex.references)))
    return claims


def findings_of(data: ScoringInput) -> list[Finding]:
    return data.findings if data.findings is not None else GroundingDetector().detect(claims_of(data))


@dataclass(frozen=True, kw_only=True)
class FindingRate(MeanMetric):
    """The share of answers whose finding is `flagged`; a finding without a verdict is left out (never read as the
    favourable side) and counted in `detector_unparsed`."""

    flagged: Callable[[Finding], bool]
    question: str  # what a reviewer labelling an answer is asked; "Yes" means not flagged
    family: str = "hallucination"
    higher_is_better: bool = False
    needs: frozenset[Need] = frozenset({"source", "detector"})
    unparsed: str | None = "detector_unparsed"

    def values(self, data: ScoringInput) -> np.ndarray:
        return np.array([np.nan if f.error else self.flagged(f) for f in findings_of(data)], float)

    def labelling(self) -> Labelling:
        return Labelling(self.question, (("Yes", 0.0), ("No", 1.0)), worst=1.0)


def hallucinated(finding: Finding) -> bool:
    return finding.hallucinated


def abstained(finding: Finding) -> bool:
    return finding.abstained


class DetectorUnparsed(MeanMetric):
    """Share of answers the detector gave no verdict on: 1 where the finding has an error, else 0."""

    def values(self, data: ScoringInput) -> np.ndarray:
        return np.array([f.error is not None for f in findings_of(data)], float)

    def worst_case(self, stats: np.ndarray, failed: np.ndarray) -> np.ndarray:
        # A candidate's failed request is no failure of the detector's: the rates count it at their worst.
        return stats


HALLUCINATION = FindingRate(name="hallucination_rate", flagged=hallucinated,
                            question="Is every claim of this answer supported by the passage?")
ABSTENTION = FindingRate(name="abstention_rate", flagged=abstained,
                         question="Does this answer attempt the question (rather than decline or say it cannot tell)?")
for rate in (HALLUCINATION, ABSTENTION):
    register(rate)
    register_corrected(rate)
register(DetectorUnparsed(name="detector_unparsed", family="hallucination", higher_is_better=False,
                          needs=frozenset({"source", "detector"})))
