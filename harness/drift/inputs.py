"""Input drift: the messages themselves, before any model reads them. Lengths, words the reference never
used (the "new product names" case), and a domain classifier that tries to tell traffic from reference."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import numpy as np
from scipy.stats import ks_2samp, rankdata
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline, make_union

from harness.drift.base import DetailTable, DriftInput, DriftSignal, Measurement, register, relative_change
from harness.stats import percentile_interval

_WORD = re.compile(r"[a-z][a-z0-9']*")
# Fewer traffic rows than this and a classifier or a vocabulary comparison says nothing.
MIN_ROWS = 10


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


@register
class InputLengthChange(DriftSignal):
    name = "input_length_change"
    description = "relative change of the mean input length in words (0: none); Kolmogorov–Smirnov p beside it"
    default_rules = ({"at_least": -0.33}, {"at_most": 0.5})

    def measure(self, inp: DriftInput) -> Measurement:
        ref = np.array([len(words(t)) for t in inp.reference.texts], float)
        new = np.array([len(words(t)) for t in inp.traffic.texts], float)
        m = relative_change(ref, new, inp, self.name)
        ks = ks_2samp(ref, new)
        return Measurement(m.value, m.ci_low, m.ci_high, float(ks.pvalue),
                           f"{m.evidence}; KS p={float(ks.pvalue):.3g}")


@register
class NewTermRate(DriftSignal):
    """Share of traffic messages using a word the reference never used, minus the same share for held-out
    reference messages (words seen in the other four fifths), so a reference's own long tail is not drift."""

    name = "new_term_rate"
    description = "extra share of messages with a word the reference never used (0: as in the reference)"
    default_rules = ({"at_most": 0.1},)

    def measure(self, inp: DriftInput) -> Measurement:
        ref_words = [set(words(t)) for t in inp.reference.texts]
        new_words = [set(words(t)) for t in inp.traffic.texts]
        vocabulary = set().union(*ref_words)
        folds = inp.rng(self.name).integers(0, 5, len(ref_words))
        held_out = np.zeros(len(ref_words))
        for k in range(5):
            seen = set().union(*(w for w, f in zip(ref_words, folds, strict=True) if f != k))
            for i in np.flatnonzero(folds == k):
                held_out[i] = bool(ref_words[i] - seen)
        unseen = np.array([bool(w - vocabulary) for w in new_words], float)
        rng = inp.rng(self.name + "/bootstrap")
        draws = (unseen[rng.integers(0, len(unseen), (inp.resamples, len(unseen)))].mean(axis=1)
                 - held_out[rng.integers(0, len(held_out), (inp.resamples, len(held_out)))].mean(axis=1))
        low, high = percentile_interval(draws, inp.confidence)
        counts = Counter(w for ws in new_words for w in ws - vocabulary)
        terms = [{"term": t, "rows": c} for t, c in counts.most_common(20)]
        shown = ", ".join(f"{t['term']} ({t['rows']})" for t in terms[:8])
        return Measurement(float(unseen.mean() - held_out.mean()), low, high,
                           evidence=f"{unseen.mean():.1%} of messages use a new word against {held_out.mean():.1%} "
                                    f"in the reference" + (f"; new: {shown}" if shown else ""),
                           detail={"new_terms": terms, "rising_terms": rising_terms(ref_words, new_words)})

    def rows_behind(self, inp: DriftInput, m: Measurement) -> list[int]:
        new = {t["term"] for t in m.detail.get("new_terms", [])}
        return [i for i, text in enumerate(inp.traffic.texts) if set(words(text)) & new]

    def tables(self, detail: dict[str, Any]) -> list[DetailTable]:
        return [DetailTable("New words (never in the reference), by messages using them", ("term", "rows"),
                            detail.get("new_terms", [])),
                DetailTable("Rising words (a larger share of messages than in the reference, log-odds z)",
                            ("term", "z", "traffic_rows", "reference_rows"), detail.get("rising_terms", []))]


def rising_terms(reference: list[set[str]], traffic: list[set[str]], top: int = 15) -> list[dict[str, float]]:
    """Words used by a larger share of traffic messages than of reference messages, by the z-score of the
    log odds ratio of the two shares (Haldane's 0.5 added to every cell, so unseen words have finite odds)."""
    ref, new = Counter(w for ws in reference for w in ws), Counter(w for ws in traffic for w in ws)
    vocab = sorted(new)
    if not vocab:
        return []
    r = np.array([ref[w] for w in vocab], float) + 0.5
    t = np.array([new[w] for w in vocab], float) + 0.5
    n_r, n_t = len(reference) + 1.0, len(traffic) + 1.0
    log_odds = np.log(t / (n_t - t)) - np.log(r / (n_r - r))
    z = log_odds / np.sqrt(1 / t + 1 / (n_t - t) + 1 / r + 1 / (n_r - r))
    order = np.argsort(-z)[:top]
    return [{"term": vocab[i], "z": round(float(z[i]), 2), "traffic_rows": new[vocab[i]],
             "reference_rows": ref[vocab[i]]} for i in order if z[i] > 1.96]


@register
class DomainAUC(DriftSignal):
    """A classifier (TF-IDF words and character n-grams, logistic regression) trained to tell traffic from a
    same-sized reference sample, scored out of fold: 0.5 when it cannot, 1.0 when the two never look alike."""

    name = "domain_auc"
    description = "out-of-fold ROC AUC of a classifier telling traffic from reference (0.5: no drift)"
    default_rules = ({"at_most": 0.7},)

    def measure(self, inp: DriftInput) -> Measurement:
        rng = inp.rng(self.name)
        n_new = len(inp.traffic)
        if n_new < MIN_ROWS:
            return Measurement(float("nan"), evidence=f"{n_new} rows; the classifier needs {MIN_ROWS}")
        n_ref = min(len(inp.reference), max(n_new, 200), 2000)
        ref_idx = rng.choice(len(inp.reference), n_ref, replace=False)
        texts = [inp.reference.texts[i] for i in ref_idx] + list(inp.traffic.texts)
        y = np.r_[np.zeros(n_ref), np.ones(n_new)]
        folds = int(min(5, n_new, n_ref))
        features = make_union(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                              TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, min_df=2))
        model = make_pipeline(features, LogisticRegression(C=1.0, max_iter=2000))
        split = StratifiedKFold(folds, shuffle=True, random_state=int(rng.integers(2**31)))
        scores = cross_val_predict(model, texts, y, cv=split, method="predict_proba")[:, 1]
        value = _auc(scores[y == 1][None, :], scores[y == 0][None, :])[0]
        pos, neg = scores[y == 1], scores[y == 0]
        boot = rng.integers(0, 1 << 31)
        draws = _auc(pos[np.random.default_rng(boot).integers(0, len(pos), (inp.resamples, len(pos)))],
                     neg[np.random.default_rng(boot + 1).integers(0, len(neg), (inp.resamples, len(neg)))])
        low, high = percentile_interval(draws, inp.confidence)
        # The traffic messages the classifier was surest were not reference-like: what a person reads first.
        unlike = [int(i) for i in np.argsort(-pos, kind="stable")[:50]]
        return Measurement(float(value), low, high,
                           evidence=f"{folds}-fold classifier on {n_new} traffic and {n_ref} reference messages",
                           detail={"most_unlike": unlike})

    def rows_behind(self, inp: DriftInput, m: Measurement) -> list[int]:
        return list(m.detail.get("most_unlike", []))


def _auc(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """ROC AUC per row (Mann–Whitney U over mid-ranks): pos (b, n1), neg (b, n0) -> (b,)."""
    n1, n0 = pos.shape[1], neg.shape[1]
    ranks = rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    return (ranks[:, :n1].sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0)
