"""The `grounding` detector (default, no model): an answer is hallucinated when it asserts what the source,
the question and the references do not support.

* any number (a token with a digit) absent from them, or
* more than `tolerance` of its content words (not stop words; compared as written and by Porter stem), or
* a short answer (2 to 10 words, stop words trimmed at both ends) whose words all occur but never
  together: "Lord Black of London" against a passage about Lord Black of Crossharbour.

An abstention ("the passage does not say", "I don't know", an empty answer) is not a hallucination; it
is counted separately. The default tolerance (0.1) is the value 5-fold cross-validation across HaluEval's
length-matched questions chose (`harness validate-detector --tune tolerance=...`); the README quotes its
held-out agreement with the human labels.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Annotated, Literal

from nltk.stem.porter import PorterStemmer
from pydantic import Field
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from harness.detectors.base import Detector, DetectorOptions, register
from harness.records import Claim, Finding

_WORD = re.compile(r"[A-Za-z0-9]+(?:[.,'][A-Za-z0-9]+)*")
_ABSTAIN = re.compile(
    r"\b(does not (say|mention|specify|state)|doesn't (say|mention)|not (mentioned|stated|specified|enough "
    r"information)|no information|cannot (be )?(answer|determine)|can't (answer|tell)|i (do not|don't) know|"
    r"unknown|unanswerable)\b",
    re.IGNORECASE,
)
# Answers to yes/no questions assert nothing the passage must contain word for word.
_NEUTRAL = frozenset({"yes", "no"})
_PHRASE_WORDS = (2, 10)
_stemmer = PorterStemmer()


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    return _stemmer.stem(word.lower())


def _content(text: str) -> list[str]:
    return [w for w in _WORD.findall(text) if w.lower() not in ENGLISH_STOP_WORDS and w.lower() not in _NEUTRAL]


def _stemmed(words: list[str]) -> str:
    return " " + " ".join(_stem(w) for w in words) + " "


def is_abstention(answer: str) -> bool:
    return not answer.strip() or bool(_ABSTAIN.search(answer))


def unsupported_spans(answer: str, evidence: str) -> list[str]:
    """The answer's content words that the evidence does not support."""
    words = _WORD.findall(evidence)
    known = {_stem(w) for w in words} | {w.lower() for w in words}
    return [w for w in _content(answer) if _stem(w) not in known and w.lower() not in known]


def _unsupported_phrase(answer: str, evidence: str) -> str | None:
    words = _WORD.findall(answer)
    start, end = 0, len(words)
    while start < end and words[start].lower() in ENGLISH_STOP_WORDS:
        start += 1
    while end > start and words[end - 1].lower() in ENGLISH_STOP_WORDS:
        end -= 1
    core = words[start:end]
    low, high = _PHRASE_WORDS
    if low <= len(core) <= high and _stemmed(core) not in _stemmed(_WORD.findall(evidence)):
        return " ".join(core)
    return None


def check(answer: str, evidence: str, tolerance: float = 0.1) -> Finding:
    if is_abstention(answer):
        return Finding(hallucinated=False, abstained=True)
    words = _content(answer)
    if not words:
        return Finding(hallucinated=False)
    missing = unsupported_spans(answer, evidence)
    share = len(missing) / len(words)
    if any(any(ch.isdigit() for ch in w) for w in missing) or share > tolerance:
        return Finding(hallucinated=True, spans=tuple(missing), score=share)
    phrase = None if missing else _unsupported_phrase(answer, evidence)
    if phrase is not None:
        return Finding(hallucinated=True, spans=(phrase,), score=share)
    return Finding(hallucinated=False, spans=tuple(missing), score=share)


@register
class GroundingOptions(DetectorOptions):
    """The default rule, no model: content words of the answer must occur in the passage or references."""

    name: Literal["grounding"] = "grounding"
    tolerance: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.1, description="share of the answer's content words that may be unsupported")
    needs_source = False

    @classmethod
    def detector(cls) -> type[Detector]:
        return GroundingDetector

    def open(self, say: Callable[[str], None]) -> Detector:
        return GroundingDetector(self.tolerance)


class GroundingDetector(Detector):
    name = "grounding"
    version = "2"

    def __init__(self, tolerance: float = 0.1) -> None:
        self.tolerance = tolerance

    def detect(self, claims: list[Claim]) -> list[Finding]:
        return [check(c.answer, " ".join([c.source, c.question, *c.references]), self.tolerance) for c in claims]

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "tolerance": self.tolerance}
