"""The `grounding` detector (default, no model): an answer is hallucinated when it asserts what the source,
the question and the references do not support.

* any number (a token with a digit) absent from them, or
* more than `tolerance` of its content words (not stop words; compared as written and by Porter stem), or
* a short answer (2 to 10 words, stop words trimmed at both ends) whose words all occur but never
  together: "Lord Black of London" against a passage about Lord Black of Crossharbour.

An abstention is not a hallucination; it is counted separately. An answer is one when it is empty, or when it
says it cannot answer (an abstention phrase: "the passage does not say", "I don't know", "unknown") and asserts
nothing else:

* with those phrases taken out, every word left is a stop word, a word of the question (as written or by stem:
  "The passage does not mention who sent the parcel" to "Who sent the parcel?"), or one of the few words an
  abstention is put in (`_HEDGE`: passage, information, sorry...);
* the question's words are allowed only in a sentence (or clause: split at . ! ? ;) that holds an abstention
  phrase; any other sentence may hold only stop words and `_HEDGE` words ("Sorry."), so "Berlin. The exact
  details are not mentioned." asserts "Berlin";
* where the question offers alternatives ("from Paris or from Berlin", "Alice or Bob", "red, green, or blue"; an
  alternative is known by the content word nearest to "or" on each side, and by each earlier item of a list
  with a comma before "or"), an answer that names one of them names all and says "or": it repeats the choice
  ("does not say whether it was Paris or Berlin") instead of making it ("Berlin, the details are unknown").

A hedge beside an assertion ("It was sent from Berlin on 3 March 1999; the cost is unknown") is no abstention:
the answer is checked as any other, so a fabrication cannot escape by adding one.

The default tolerance (0.1) is the value 5-fold cross-validation across HaluEval's length-matched questions
chose (`harness validate-detector --tune tolerance=...`); the README quotes its held-out agreement with the human
labels.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import Field

from harness.detectors.base import Detector, DetectorOptions, register
from harness.records import Claim, Finding

_WORD = re.compile(r"[A-Za-z0-9]+(?:[.,'][A-Za-z0-9]+)*")
_ABSTAIN = re.compile(
    r"\b(does not (say|mention|specify|state)|doesn't (say|mention)|not (mentioned|stated|specified|enough "
    r"information)|no information|cannot (be )?(answer|determine)|can't (answer|tell)|i (do not|don't) know|"
    r"unknown|unanswerable)\b",
    re.IGNORECASE,
)
# The words, besides stop words and the question's, that an abstention is put in: they assert nothing.
_HEDGE = frozenset({
    "passage", "text", "context", "document", "article", "source", "information", "info", "detail", "details", "data",
    "provided", "provide", "given", "based", "according", "mention", "mentioned", "say", "says", "said", "state",
    "stated", "specify", "specified", "tell", "told", "know", "known", "sure", "certain", "clear", "unclear",
    "unable", "able", "determine", "answer", "question", "sorry", "afraid", "apologies", "unfortunately", "exact",
    "exactly", "specific", "specifically", "available", "contain", "contains", "include", "includes", "indicate",
    "indicates", "find", "found", "further", "additional", "i'm", "it's", "isn't", "doesn't", "don't", "didn't",
    "can't", "couldn't", "there's", "won't"
})
# Answers to yes/no questions assert nothing the passage must contain word for word.
_NEUTRAL = frozenset({"yes", "no"})
# A sentence or clause ends at . ! ? or ; before a space or the end (not inside "3.5").
_SENTENCE_END = re.compile(r"[.!?;]+(?=\s|$)")
# Words and single punctuation marks, to find the alternatives around a question's "or".
_TOKEN = re.compile(_WORD.pattern + r"|[^\sA-Za-z0-9]")
_PHRASE_WORDS = (2, 10)


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    # nltk and scikit-learn take about a second to import: loaded when a detector first reads text, not when the
    # registry (every `harness` command, the dashboard) imports this module.
    from nltk.stem.porter import PorterStemmer

    return PorterStemmer()


@lru_cache(maxsize=1)
def _stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return ENGLISH_STOP_WORDS


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    return _stemmer().stem(word.lower())


def _content(text: str) -> list[str]:
    return [w for w in _WORD.findall(text) if w.lower() not in _stop_words() and w.lower() not in _NEUTRAL]


def _stemmed(words: list[str]) -> str:
    return " " + " ".join(_stem(w) for w in words) + " "


@lru_cache(maxsize=1)
def _hedge_stems() -> frozenset[str]:
    return frozenset(_stem(w) for w in _HEDGE)


def _allowed(word: str, asked: set[str]) -> bool:
    low = word.lower()
    return (low in _stop_words() or low in _HEDGE or _stem(word) in _hedge_stems()
            or low in asked or _stem(word) in asked)


def _words_of(word: str) -> set[str]:
    return {word.lower(), _stem(word)}


def _head(tokens: list[str]) -> str | None:
    """The first content word of `tokens` before a punctuation mark."""
    for tok in tokens:
        if not _WORD.fullmatch(tok):
            return None
        if tok.lower() not in _stop_words():
            return tok
    return None


def alternatives(question: str) -> list[list[set[str]]]:
    """The choices `question` offers, one list per "or" of two or more alternatives, each alternative as its
    word (as written, lower case, and by stem): the content word nearest to "or" on either side ("from Paris or
    from Berlin": Paris, Berlin), and, where a comma stands before "or", the nearest content word before each
    earlier comma of the list ("red, green, or blue")."""
    tokens = _TOKEN.findall(question.replace("\u2019", "'"))
    found: list[list[set[str]]] = []
    for i, tok in enumerate(tokens):
        if tok.lower() != "or":
            continue
        heads = [_head(tokens[i + 1:])]
        before = tokens[:i][::-1]
        listed = bool(before) and before[0] == ","
        if listed:
            before = before[1:]
        while True:
            heads.append(_head(before))
            if not listed:
                break
            cut = next((k for k, t in enumerate(before) if not _WORD.fullmatch(t)), None)
            if cut is None or before[cut] != ",":
                break
            before = before[cut + 1:]
        choice = [_words_of(h) for h in heads if h is not None]
        if len(choice) >= 2:
            found.append(choice)
    return found


def is_abstention(answer: str, question: str) -> bool:
    """Empty, or an abstention phrase and nothing asserted besides it (see the module's docstring): every word
    outside the phrases is a stop word, an abstention's own (`_HEDGE`), or a word of `question` in a sentence
    that says it cannot answer; an answer naming one of the question's alternatives names all and says "or"."""
    text = answer.replace("\u2019", "'")
    if not text.strip():
        return True
    if not _ABSTAIN.search(text):
        return False
    asked = {w.lower() for w in _WORD.findall(question.replace("\u2019", "'"))}
    asked |= {_stem(w) for w in asked}
    said: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        words = _WORD.findall(_ABSTAIN.sub(" ", sentence))
        if not all(_allowed(w, asked if _ABSTAIN.search(sentence) else set()) for w in words):
            return False
        said += words
    named = set().union(*(_words_of(w) for w in said)) if said else set()
    for choice in alternatives(question):
        picked = [bool(alt & named) for alt in choice]
        if any(picked) and not (all(picked) and "or" in named):
            return False
    return True


def unsupported_spans(answer: str, evidence: str) -> list[str]:
    """The answer's content words that the evidence does not support."""
    words = _WORD.findall(evidence)
    known = {_stem(w) for w in words} | {w.lower() for w in words}
    return [w for w in _content(answer) if _stem(w) not in known and w.lower() not in known]


def _unsupported_phrase(answer: str, evidence: str) -> str | None:
    words = _WORD.findall(answer)
    start, end = 0, len(words)
    while start < end and words[start].lower() in _stop_words():
        start += 1
    while end > start and words[end - 1].lower() in _stop_words():
        end -= 1
    core = words[start:end]
    low, high = _PHRASE_WORDS
    if low <= len(core) <= high and _stemmed(core) not in _stemmed(_WORD.findall(evidence)):
        return " ".join(core)
    return None


def check(answer: str, evidence: str, tolerance: float = 0.1, question: str = "") -> Finding:
    """The finding on `answer` against `evidence` (the source, question and references); `question` alone decides
    which of the answer's words an abstention may repeat."""
    if is_abstention(answer, question):
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
    # 3: a hedge beside an assertion is no abstention (findings kept under version 2 are made again).
    # 4: the question's words only in a sentence that says it cannot answer, and no picking of its alternatives.
    version = "4"

    def __init__(self, tolerance: float = 0.1) -> None:
        self.tolerance = tolerance

    def detect(self, claims: list[Claim]) -> list[Finding]:
        return [check(c.answer, " ".join([c.source, c.question, *c.references]), self.tolerance, c.question)
                for c in claims]

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "tolerance": self.tolerance}
