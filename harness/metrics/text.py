"""Text overlap with the reference(s): ROUGE (rouge-score), BLEU and chrF (sacrebleu), exact match and
token F1 (SQuAD's normalisation). With several references, ROUGE, exact match and token F1 take the best
reference per example; BLEU and chrF use all references, as sacrebleu does."""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass
from functools import partial

import numpy as np
from sacrebleu.metrics import BLEU, CHRF

from harness.metrics.base import MeanOf, Need, ScoringInput, SumStatsMetric, register


def rouge(rouge_type: str, data: ScoringInput) -> np.ndarray:
    """Per answer: the F-measure of `rouge_type` (rouge-score's name) against its best reference."""
    # rouge-score imports nltk (half a second): loaded when a run scores ROUGE, not by every import of the registry.
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer([rouge_type], use_stemmer=True)
    out = []
    for text, ex in zip(data.texts, data.examples, strict=True):
        refs = ex.references or [""]
        out.append(scorer.score_multi(refs, text)[rouge_type].fmeasure)
    return np.array(out)


register(MeanOf(name="rouge1", family="text", needs=frozenset({"reference"}), fn=partial(rouge, "rouge1")))
register(MeanOf(name="rouge2", family="text", needs=frozenset({"reference"}), fn=partial(rouge, "rouge2")))
register(MeanOf(name="rouge_l", family="text", needs=frozenset({"reference"}), fn=partial(rouge, "rougeL")))


def reference_streams(data: ScoringInput) -> list[list[str]]:
    """sacrebleu wants one stream per reference position; short lists repeat their first reference,
    which changes neither clipped n-gram counts nor the closest reference length."""
    refs = [ex.references or [""] for ex in data.examples]
    width = max(len(r) for r in refs)
    return [[r[k] if k < len(r) else r[0] for r in refs] for k in range(width)]


@dataclass(frozen=True, kw_only=True)
class _Sacre(SumStatsMetric):
    family: str = "text"
    value_range: tuple[float, float] = (0.0, 100.0)
    decimals: int = 1  # sacrebleu reports on a 0-100 scale
    needs: frozenset[Need] = frozenset({"reference"})

    def scorer(self) -> BLEU | CHRF:
        raise NotImplementedError

    def stats(self, data: ScoringInput) -> np.ndarray:
        rows = self.scorer()._extract_corpus_statistics(data.texts, reference_streams(data))
        return np.asarray(rows, dtype=np.float64)

    def from_sums(self, sums: np.ndarray) -> np.ndarray:
        scorer = self.scorer()
        return np.array([scorer._compute_score_from_stats(row.round().astype(int).tolist()).score for row in sums])

    def worst_case(self, stats: np.ndarray, failed: np.ndarray) -> None:
        """Unknown: a failed request may be the runaway answer that timed out, and an answer matching nothing
        lowers a corpus score more the longer it is, down to nothing. Any failure makes a criterion insufficient."""
        return None


class Bleu(_Sacre):
    def scorer(self) -> BLEU:
        return BLEU()


class Chrf(_Sacre):
    def scorer(self) -> CHRF:
        return CHRF()


register(Bleu(name="bleu"))
register(Chrf(name="chrf"))


_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalise_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower().translate(_NO_PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalise_answer(prediction).split(), normalise_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def exact_match(data: ScoringInput) -> np.ndarray:
    """Per answer: 1 where it equals a reference after SQuAD's normalisation."""
    return np.array([
        max(float(normalise_answer(t) == normalise_answer(r)) for r in ex.references or [""])
        for t, ex in zip(data.texts, data.examples, strict=True)
    ])


def best_token_f1(data: ScoringInput) -> np.ndarray:
    """Per answer: its token F1 with the reference it overlaps most."""
    return np.array([
        max(token_f1(t, r) for r in ex.references or [""])
        for t, ex in zip(data.texts, data.examples, strict=True)
    ])


register(MeanOf(name="exact_match", family="text", needs=frozenset({"reference"}), fn=exact_match))
register(MeanOf(name="token_f1", family="text", needs=frozenset({"reference"}), fn=best_token_f1))
