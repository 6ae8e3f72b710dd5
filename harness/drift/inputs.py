"""Input drift: the messages themselves, before any model reads them. Lengths, words the reference never
used (the "new product names" case), and a domain classifier that tries to tell traffic from reference."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.stats import kstwo, norm, rankdata

from harness.drift.base import (
    DetailTable,
    DriftInput,
    DriftSignal,
    Measurement,
    Side,
    StreamedSignal,
    register,
    relative_change,
)
from harness.stats import percentile_interval

if TYPE_CHECKING:
    from sklearn.feature_extraction.text import HashingVectorizer
    from sklearn.model_selection import BaseCrossValidator

_WORD = re.compile(r"[a-z][a-z0-9']*")
# Fewer traffic rows than this and a classifier or a vocabulary comparison says nothing.
MIN_ROWS = 10
# The classifier reads at most this many messages a side: its AUC estimates an effect size whose interval
# need not shrink with traffic volume, and its cost stays flat however large the window.
CLASSIFIER_ROWS = 2000


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ks_p_value(a: Counter[int], b: Counter[int]) -> float:
    """Two-sample Kolmogorov–Smirnov p-value (asymptotic, as scipy's for large samples) of {value: rows} histograms."""
    support = sorted(set(a) | set(b))
    cdf_a = np.cumsum([a.get(v, 0) for v in support]) / a.total()
    cdf_b = np.cumsum([b.get(v, 0) for v in support]) / b.total()
    n_a, n_b = a.total(), b.total()
    return float(kstwo.sf(np.abs(cdf_a - cdf_b).max(), max(1, round(n_a * n_b / (n_a + n_b)))))


@register
class InputLengthChange(StreamedSignal[Counter[int], Counter[int]]):
    name = "input_length_change"
    gives_p_value = True
    description = "relative change of the mean input length in words (0: none); Kolmogorov–Smirnov p beside it"
    default_rules = ({"at_least": -0.33}, {"at_most": 0.5})

    def prepare(self, inp: DriftInput) -> Counter[int]:
        return Counter(len(words(t)) for t in inp.reference.texts)

    def summarize(self, traffic: Side, reference: Counter[int]) -> Counter[int]:
        return Counter(len(words(t)) for t in traffic.texts)

    def merge(self, a: Counter[int], b: Counter[int]) -> Counter[int]:
        return a + b

    def compare(self, inp: DriftInput, reference: Counter[int], traffic: Counter[int]) -> Measurement:
        m = relative_change(reference, traffic, inp, self.name)
        p = ks_p_value(reference, traffic)
        return Measurement(m.value, m.ci_low, m.ci_high, p, f"{m.evidence}; KS p={p:.3g}")


@dataclass(frozen=True)
class ReferenceTerms:
    vocabulary: frozenset[str]
    rows: int
    held_out_unseen: int  # reference messages with a word the other four fifths never used
    word_rows: Counter[str]  # messages using each word


@dataclass(frozen=True)
class TrafficTerms:
    rows: int = 0
    unseen: int = 0  # messages with a word the reference never used
    new_terms: Counter[str] = field(default_factory=Counter)  # messages using each such word
    word_rows: Counter[str] = field(default_factory=Counter)


@register
class NewTermRate(StreamedSignal[ReferenceTerms, TrafficTerms]):
    """Share of traffic messages using a word the reference never used, minus the same share for held-out
    reference messages (words seen in the other four fifths), so a reference's own long tail is not drift."""

    name = "new_term_rate"
    description = "extra share of messages with a word the reference never used (0: as in the reference)"
    default_rules = ({"at_most": 0.1},)

    def prepare(self, inp: DriftInput) -> ReferenceTerms:
        ref_words = [set(words(t)) for t in inp.reference.texts]
        folds = inp.rng(self.name).integers(0, 5, len(ref_words))
        held_out = 0
        for k in range(5):
            seen = set().union(*(w for w, f in zip(ref_words, folds, strict=True) if f != k))
            held_out += sum(bool(ref_words[i] - seen) for i in np.flatnonzero(folds == k))
        return ReferenceTerms(frozenset().union(*ref_words), len(ref_words), held_out,
                              Counter(w for ws in ref_words for w in ws))

    def summarize(self, traffic: Side, reference: ReferenceTerms) -> TrafficTerms:
        new_words = [set(words(t)) for t in traffic.texts]
        unseen = [ws - reference.vocabulary for ws in new_words]
        return TrafficTerms(len(new_words), sum(bool(u) for u in unseen), Counter(w for u in unseen for w in u),
                            Counter(w for ws in new_words for w in ws))

    def merge(self, a: TrafficTerms, b: TrafficTerms) -> TrafficTerms:
        return TrafficTerms(a.rows + b.rows, a.unseen + b.unseen, a.new_terms + b.new_terms, a.word_rows + b.word_rows)

    def compare(self, inp: DriftInput, reference: ReferenceTerms, traffic: TrafficTerms) -> Measurement:
        new_share, ref_share = traffic.unseen / traffic.rows, reference.held_out_unseen / reference.rows
        rng = inp.rng(self.name + "/bootstrap")
        # Binomial draws: the bootstrap of a share, from its count alone.
        draws = (rng.binomial(traffic.rows, new_share, inp.resamples) / traffic.rows
                 - rng.binomial(reference.rows, ref_share, inp.resamples) / reference.rows)
        low, high = percentile_interval(draws, inp.confidence)
        terms = [{"term": t, "rows": c} for t, c in traffic.new_terms.most_common(20)]
        shown = ", ".join(f"{t['term']} ({t['rows']})" for t in terms[:8])
        rising = rising_terms(reference.word_rows, reference.rows, traffic.word_rows, traffic.rows)
        return Measurement(new_share - ref_share, low, high,
                           evidence=f"{new_share:.1%} of messages use a new word against {ref_share:.1%} "
                                    f"in the reference" + (f"; new: {shown}" if shown else ""),
                           detail={"new_terms": terms, "rising_terms": rising})

    def rows_behind(self, inp: DriftInput, m: Measurement) -> list[int]:
        new = {t["term"] for t in m.detail.get("new_terms", [])}
        return [i for i, text in enumerate(inp.traffic.texts) if set(words(text)) & new]

    def tables(self, detail: dict[str, Any]) -> list[DetailTable]:
        return [DetailTable("New words (never in the reference), by messages using them", ("term", "rows"),
                            detail.get("new_terms", [])),
                DetailTable("Rising words (a larger share of messages than in the reference, log-odds z)",
                            ("term", "z", "traffic_rows", "reference_rows"), detail.get("rising_terms", []))]


def rising_terms(reference: Counter[str], reference_rows: int, traffic: Counter[str], traffic_rows: int,
                 top: int = 15) -> list[dict[str, float]]:
    """Words used by a larger share of traffic messages than of reference messages (messages using each word, out
    of all messages), by the z-score of the log odds ratio of the two shares (Haldane's 0.5 added to every cell,
    so unseen words have finite odds)."""
    vocab = sorted(traffic)
    if not vocab:
        return []
    r = np.array([reference[w] for w in vocab], float) + 0.5
    t = np.array([traffic[w] for w in vocab], float) + 0.5
    n_r, n_t = reference_rows + 1.0, traffic_rows + 1.0
    log_odds = np.log(t / (n_t - t)) - np.log(r / (n_r - r))
    z = log_odds / np.sqrt(1 / t + 1 / (n_t - t) + 1 / r + 1 / (n_r - r))
    order = np.argsort(-z)[:top]
    return [{"term": vocab[i], "z": round(float(z[i]), 2), "traffic_rows": traffic[vocab[i]],
             "reference_rows": reference[vocab[i]]} for i in order if z[i] > 1.96]


@cache
def _hashed_grams() -> tuple[HashingVectorizer, HashingVectorizer]:
    """Hashed word 1–2-grams and character 2–4-grams: no vocabulary to fit, so every fold sees the same features.
    scikit-learn is imported here, by the first classifier signal measured, not by every import of the signals."""
    from sklearn.feature_extraction.text import HashingVectorizer

    return (HashingVectorizer(ngram_range=(1, 2), n_features=2**16, alternate_sign=False, norm=None),
            HashingVectorizer(analyzer="char_wb", ngram_range=(2, 4), n_features=2**16, alternate_sign=False,
                              norm=None))


@register
class DomainAUC(DriftSignal):
    """A classifier (TF-IDF of hashed words and character n-grams, logistic regression fitted by SGD) trained to tell
    a sample of the traffic from a reference sample, scored out of fold: 0.5 when it cannot, 1.0 when the two never
    look alike. Identical messages share a fold, so a message repeated in traffic is not learnt by heart; the
    interval is DeLong's."""

    name = "domain_auc"
    description = (f"out-of-fold ROC AUC of a classifier telling traffic from reference, on at most {CLASSIFIER_ROWS} "
                   "messages a side (0.5: no drift)")
    default_rules = ({"at_most": 0.7},)

    def measure(self, inp: DriftInput) -> Measurement:
        import scipy.sparse as sparse
        from sklearn.feature_extraction.text import TfidfTransformer
        from sklearn.linear_model import SGDClassifier
        from sklearn.model_selection import cross_val_predict

        rng = inp.rng(self.name)
        if len(inp.traffic) < MIN_ROWS:
            return Measurement(float("nan"), evidence=f"{len(inp.traffic)} rows; the classifier needs {MIN_ROWS}")
        new_idx = np.sort(rng.choice(len(inp.traffic), min(len(inp.traffic), CLASSIFIER_ROWS), replace=False))
        n_new = len(new_idx)
        n_ref = min(len(inp.reference), max(n_new, 200), CLASSIFIER_ROWS)
        ref_idx = rng.choice(len(inp.reference), n_ref, replace=False)
        texts = [inp.reference.texts[i] for i in ref_idx] + [inp.traffic.texts[i] for i in new_idx]
        y = np.r_[np.zeros(n_ref), np.ones(n_new)]
        folds = int(min(5, n_new, n_ref))
        words_grams, char_grams = _hashed_grams()
        features = TfidfTransformer(sublinear_tf=True).fit_transform(
            sparse.hstack([words_grams.transform(texts), char_grams.transform(texts)]).tocsr())
        seed = int(rng.integers(2**31))
        model = SGDClassifier(loss="log_loss", alpha=1e-4, random_state=seed)
        scores = cross_val_predict(model, features, y, cv=_folds(texts, n_ref, folds, seed),
                                   method="decision_function")
        pos, neg = scores[y == 1], scores[y == 0]
        value, low, high = _auc_interval(pos, neg, inp.confidence)
        # The traffic messages the classifier was surest were not reference-like: what a person reads first.
        unlike = [int(new_idx[i]) for i in np.argsort(-pos, kind="stable")[:50]]
        sample = f"a sample of {n_new} of {inp.rows}" if n_new < inp.rows else f"{n_new}"
        return Measurement(value, low, high,
                           evidence=f"{folds}-fold classifier on {sample} traffic and {n_ref} reference messages",
                           detail={"most_unlike": unlike})

    def rows_behind(self, inp: DriftInput, m: Measurement) -> list[int]:
        return list(m.detail.get("most_unlike", []))


def _folds(texts: list[str], n_ref: int, folds: int, seed: int) -> BaseCrossValidator:
    """Folds that keep identical messages together (each distinct message dealt round robin, those of the reference
    only, of the traffic only and of both in turn, so every fold trains on both sides), unless a side has too few
    distinct messages to fill them (a window of one repeated message): then plain stratified folds."""
    from sklearn.model_selection import PredefinedSplit, StratifiedKFold

    groups = np.unique(texts, return_inverse=True)[1]
    if min(len(set(groups[:n_ref])), len(set(groups[n_ref:]))) < folds:
        return StratifiedKFold(folds, shuffle=True, random_state=seed)
    side = np.zeros(groups.max() + 1, int)
    side[groups[:n_ref]] |= 1
    side[groups[n_ref:]] |= 2
    order = np.lexsort((np.random.default_rng(seed).random(len(side)), side))
    fold_of = np.empty(len(side), int)
    fold_of[order] = np.arange(len(side)) % folds
    return PredefinedSplit(fold_of[groups])


def _auc_interval(pos: np.ndarray, neg: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """ROC AUC (Mann–Whitney U over mid-ranks) with DeLong's normal interval, clipped to [0, 1]."""
    n1, n0 = len(pos), len(neg)
    both = rankdata(np.r_[pos, neg])
    auc = (both[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)
    # Per example, its share of the other side it outranks (DeLong's structural components).
    v_pos = (both[:n1] - rankdata(pos)) / n0
    v_neg = 1 - (both[n1:] - rankdata(neg)) / n1
    se = np.sqrt(np.var(v_pos, ddof=1) / n1 + np.var(v_neg, ddof=1) / n0) if min(n1, n0) > 1 else np.inf
    z = norm.ppf((1 + confidence) / 2)
    return float(auc), float(max(0.0, auc - z * se)), float(min(1.0, auc + z * se))
