"""A first, rule-based hallucination rate for grounded question answering (the `grounding` rule).

An answer is **hallucinated** when it asserts content that neither the source passage, the question nor
the reference supports:

* any number (a token with a digit) that does not occur in them, or
* more than `TOLERANCE` of its content words (not stop words, compared by Porter stem) absent from them.

An **abstention** ("the passage does not say", "I don't know", an empty answer) is not a hallucination;
it is counted separately as `abstention_rate`. The rule is deliberately simple and transparent; a later
version validates detectors against human labels.
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np
from nltk.stem.porter import PorterStemmer
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from harness.metrics.base import MeanMetric, ScoringInput, register

TOLERANCE = 0.25
_WORD = re.compile(r"[A-Za-z0-9]+(?:[.,'][A-Za-z0-9]+)*")
_ABSTAIN = re.compile(
    r"\b(does not (say|mention|specify|state)|doesn't (say|mention)|not (mentioned|stated|specified|enough "
    r"information)|no information|cannot (be )?(answer|determine)|can't (answer|tell)|i (do not|don't) know|"
    r"unknown|unanswerable)\b",
    re.IGNORECASE,
)
_stemmer = PorterStemmer()


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    return _stemmer.stem(word.lower())


def _content(text: str) -> list[str]:
    return [w for w in _WORD.findall(text) if w.lower() not in ENGLISH_STOP_WORDS]


def is_abstention(answer: str) -> bool:
    return not answer.strip() or bool(_ABSTAIN.search(answer))


def unsupported_spans(answer: str, evidence: str) -> list[str]:
    """The answer's content words that the evidence does not support."""
    known = {_stem(w) for w in _WORD.findall(evidence)} | {w.lower() for w in _WORD.findall(evidence)}
    return [w for w in _content(answer) if _stem(w) not in known and w.lower() not in known]


def is_hallucinated(answer: str, evidence: str) -> bool:
    if is_abstention(answer):
        return False
    words = _content(answer)
    if not words:
        return False
    missing = unsupported_spans(answer, evidence)
    if any(any(ch.isdigit() for ch in w) for w in missing):
        return True
    return len(missing) / len(words) > TOLERANCE


def evidence_of(data: ScoringInput, i: int) -> str:
    ex = data.examples[i]
    return " ".join([*ex.inputs.values(), *ex.references])


@register
class HallucinationRate(MeanMetric):
    name = "hallucination_rate"
    higher_is_better = False
    requires = frozenset({"source"})

    def values(self, data: ScoringInput) -> np.ndarray:
        return np.array([is_hallucinated(t, evidence_of(data, i)) for i, t in enumerate(data.texts)], float)


@register
class AbstentionRate(MeanMetric):
    name = "abstention_rate"
    higher_is_better = False
    requires = frozenset({"source"})

    def values(self, data: ScoringInput) -> np.ndarray:
        return np.array([is_abstention(t) for t in data.texts], float)
