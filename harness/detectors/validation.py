"""How well a hallucination detector agrees with people who labelled hallucinations (HaluEval).

Every detector is scored next to trivial baselines on the same items and the same bootstrap resamples:
always / never "hallucinated", and a length-only rule (more than k words, k fitted to the data it is
scored on). HaluEval's QA files hold, per question, a right and a hallucinated answer given the same
knowledge; answer length alone separates them there (right answers are short), so the decisive set is
the length-matched one: pairs whose two answers differ by at most one word. `general_data.jsonl` holds
ChatGPT responses to user queries labelled yes/no, with no source passage to check against.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.detectors.base import Claim, Detector
from harness.errors import HarnessError
from harness.json_files import jsonl_lines
from harness.stats import percentile_interval, resample_blocks

# Shipped with the project (MIT; data/halueval/SOURCE.md), so validation works from a clone.
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "data" / "halueval"
QA_FILES = ("qa_one-turn_data.jsonl", "qa_multi-turn_data.jsonl")
GENERAL_FILE = "general_data.jsonl"
MEASURES = ("precision", "recall", "f1", "balanced_accuracy")


@dataclass(frozen=True)
class LabelledClaim:
    claim: Claim
    hallucinated: bool
    group: str  # items that share a question are resampled together


@dataclass(frozen=True)
class Score:
    subset: str
    predictor: str
    n: int
    measure: str
    value: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class Difference:
    subset: str
    measure: str
    predictor: str
    baseline: str
    delta: float
    ci_low: float
    ci_high: float


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise HarnessError(f"{path}: file not found (expected HaluEval's {path.name})")
    rows = []
    for number, line in enumerate(jsonl_lines(path), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise HarnessError(f"{path}: line {number} is not JSON") from None
    return rows


def _field(row: dict, key: str, path: Path, number: int) -> str:
    if key not in row:
        raise HarnessError(f"{path}: row {number} has no field {key!r}")
    return str(row[key])


def load_qa(folder: Path) -> tuple[list[LabelledClaim], list[LabelledClaim]]:
    """(all QA items, the length-matched pairs' items)."""
    everything, matched = [], []
    for name in QA_FILES:
        path = folder / name
        for number, row in enumerate(_jsonl(path), 1):
            knowledge, question = _field(row, "knowledge", path, number), _field(row, "question", path, number)
            right, wrong = _field(row, "right_answer", path, number), _field(row, "hallucinated_answer", path, number)
            pair = [LabelledClaim(Claim(right, knowledge, question), False, question),
                    LabelledClaim(Claim(wrong, knowledge, question), True, question)]
            everything += pair
            if abs(len(right.split()) - len(wrong.split())) <= 1:
                matched += pair
    return everything, matched


def _files_of(subset: str) -> tuple[str, ...]:
    return (GENERAL_FILE,) if subset == "general" else tuple(QA_FILES)


def load_general(folder: Path) -> list[LabelledClaim]:
    path = folder / GENERAL_FILE
    items = []
    for number, row in enumerate(_jsonl(path), 1):
        label = _field(row, "hallucination", path, number).strip().lower()
        if label not in ("yes", "no"):
            raise HarnessError(f"{path}: row {number}: hallucination must be yes or no, not {label!r}")
        query = _field(row, "user_query", path, number)
        items.append(LabelledClaim(Claim(_field(row, "chatgpt_response", path, number), "", query), label == "yes",
                                   _field(row, "ID", path, number)))
    return items


def _words(item: LabelledClaim) -> int:
    return len(item.claim.answer.split())


def fit_length_rule(items: list[LabelledClaim]) -> int:
    """The word count k for which "more than k words means hallucinated" has the best balanced accuracy."""
    lengths = np.array([_words(i) for i in items])
    truth = np.array([i.hallucinated for i in items])
    best_k, best = 0, -1.0
    for k in np.unique(lengths):
        score = balanced_accuracy(lengths > k, truth)
        if score > best:
            best_k, best = int(k), score
    return best_k


def balanced_accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    pos, neg = truth.sum(), (~truth).sum()
    return 0.5 * ((pred & truth).sum() / max(pos, 1) + (~pred & ~truth).sum() / max(neg, 1))


def _group_counts(pred: np.ndarray, truth: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Per group: true positives, false positives, false negatives, true negatives (n_groups × 4)."""
    kinds = np.stack([pred & truth, pred & ~truth, ~pred & truth, ~pred & ~truth], axis=1).astype(float)
    out = np.zeros((n_groups, 4))
    np.add.at(out, groups, kinds)
    return out


def _measures(totals: np.ndarray) -> dict[str, np.ndarray]:
    tp, fp, fn, tn = totals.T
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = tp / (tp + fp)
        recall = tp / (tp + fn)
        f1 = np.where(tp > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        balanced = 0.5 * (recall + tn / (tn + fp))
    return {"precision": precision, "recall": recall, "f1": f1, "balanced_accuracy": balanced}


def score_subset(subset: str, items: list[LabelledClaim], predictions: dict[str, np.ndarray], resamples: int,
                 confidence: float, seed: int, compare_to: str | None = None) -> tuple[list[Score], list[Difference]]:
    """Every predictor's measures with group-bootstrap intervals on shared resamples, and the paired
    difference of each predictor against `compare_to`."""
    truth = np.array([i.hallucinated for i in items])
    names = {g: k for k, g in enumerate(dict.fromkeys(i.group for i in items))}
    groups = np.array([names[i.group] for i in items])
    counts = {p: _group_counts(pred, truth, groups, len(names)) for p, pred in predictions.items()}
    draws: dict[str, dict[str, list[np.ndarray]]] = {p: {m: [] for m in MEASURES} for p in predictions}
    for sample in resample_blocks(len(names), resamples, seed):
        for p, c in counts.items():
            for m, values in _measures(sample.counts @ c).items():
                draws[p][m].append(values)
    scores, diffs = [], []
    for p, c in counts.items():
        point = _measures(c.sum(axis=0, keepdims=True))
        for m in MEASURES:
            low, high = percentile_interval(np.concatenate(draws[p][m]), confidence)
            scores.append(Score(subset, p, len(items), m, float(point[m][0]), low, high))
            if compare_to and p != compare_to:
                base = _measures(counts[compare_to].sum(axis=0, keepdims=True))[m][0]
                delta = np.concatenate(draws[p][m]) - np.concatenate(draws[compare_to][m])
                d_low, d_high = percentile_interval(delta, confidence)
                diffs.append(Difference(subset, m, p, compare_to, float(point[m][0] - base), d_low, d_high))
    return scores, diffs


@dataclass
class ValidationReport:
    detector: dict[str, object]
    length_rule_words: dict[str, int]
    scores: list[Score]
    differences: list[Difference]
    confidence: float  # of every interval

    def to_dict(self) -> dict[str, object]:
        return {"detector": self.detector, "length_rule_words": self.length_rule_words,
                "scores": [asdict(s) for s in self.scores], "differences": [asdict(d) for d in self.differences],
                "confidence": self.confidence}


def validate(detector: Detector, folder: Path, resamples: int = 2000, confidence: float = 0.95, seed: int = 0,
             limit: int | None = None, include_general: bool = True,
             progress: Callable[[str], None] = print) -> ValidationReport:
    qa, matched = load_qa(folder)
    subsets = {"qa": qa, "qa length-matched": matched}
    if include_general:
        subsets["general"] = load_general(folder)
    for subset, items in subsets.items():
        if not items:  # the length-matched pairs are the test that answer length alone cannot pass
            raise HarnessError(f"{folder}: no {subset} answers in {', '.join(_files_of(subset))} (a pair is "
                               "length-matched when its right and hallucinated answers differ by at most one word)")
    if limit:
        rng = np.random.default_rng(seed)
        subsets = {k: [v[i] for i in sorted(rng.choice(len(v), min(limit, len(v)), replace=False))]
                   for k, v in subsets.items()}
    name = f"{detector.name} v{detector.version}"
    scores: list[Score] = []
    diffs: list[Difference] = []
    rules: dict[str, Any] = {}
    # The length rule is fitted on the whole QA set and carried to its matched subset, as a user would.
    fitted_on = {"qa": "qa", "qa length-matched": "qa", "general": "general"}
    # The matched pairs are part of the whole QA set: each claim is judged once (a model detector is slow).
    judged: dict[Claim, bool] = {}
    for subset, items in subsets.items():
        progress(f"{name}: {subset} ({len(items)} answers)")
        todo = list(dict.fromkeys(i.claim for i in items if i.claim not in judged))
        judged.update(zip(todo, (f.hallucinated for f in detector.detect(todo)), strict=True))
        k = rules.setdefault(fitted_on[subset], fit_length_rule(subsets[fitted_on[subset]]))
        lengths = np.array([_words(i) for i in items])
        predictions = {
            name: np.array([judged[i.claim] for i in items]),
            f"length > {k} words": lengths > k,
            "always hallucinated": np.ones(len(items), bool),
            "never hallucinated": np.zeros(len(items), bool),
        }
        s, d = score_subset(subset, items, predictions, resamples, confidence, seed, compare_to=f"length > {k} words")
        scores += s
        diffs += [x for x in d if x.predictor == name]
    return ValidationReport(detector.describe(), rules, scores, diffs, confidence)
