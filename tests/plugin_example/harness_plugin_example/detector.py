"""A detector that calls every answer longer than `max_words` words hallucinated: a team's own rule."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from harness.detectors import Claim, Detector, DetectorOptions, Finding, register


class LongAnswers(Detector):
    name = "long_answers"
    version = "1"

    def __init__(self, max_words: int) -> None:
        self.max_words = max_words

    def detect(self, claims: list[Claim]) -> list[Finding]:
        return [Finding(hallucinated=len(c.answer.split()) > self.max_words) for c in claims]


@register
class LongAnswersOptions(DetectorOptions):
    name: Literal["long_answers"] = "long_answers"
    max_words: int = 3
    needs_source = False

    @classmethod
    def detector(cls) -> type[Detector]:
        return LongAnswers

    def open(self, say: Callable[[str], None]) -> Detector:
        return LongAnswers(self.max_words)
