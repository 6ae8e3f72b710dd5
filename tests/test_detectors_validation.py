"""Detector validation on the real HaluEval files shipped in data/halueval: counts, the length-matched
subset, the length rule, every measure against scikit-learn on the same predictions, cross-validated
tuning that never sees its held-out questions, and the default detector held to the figure the README
states (from the file it names)."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, precision_score, recall_score
from sklearn.model_selection import GroupKFold

from harness.detectors.base import Claim, Detector, Finding
from harness.detectors.grounding import GroundingDetector, GroundingOptions
from harness.detectors.tuning import cross_validate
from harness.detectors.validation import (
    DEFAULT_DATA,
    LabelledClaim,
    fit_length_rule,
    load_general,
    load_qa,
    score_subset,
    validate,
)
from harness.errors import HarnessError

HALUEVAL = DEFAULT_DATA
ROOT = Path(__file__).resolve().parents[1]
RECORDED = ROOT / "benchmarks" / "results" / "validate-detector-grounding.json"


def test_halueval_sets():
    qa, matched = load_qa(HALUEVAL)
    assert len(qa) == 2000 and sum(i.hallucinated for i in qa) == 1000
    assert len(matched) == 136  # 68 pairs whose answers differ by at most one word
    for right, wrong in zip(matched[::2], matched[1::2], strict=True):
        assert abs(len(right.claim.answer.split()) - len(wrong.claim.answer.split())) <= 1
    general = load_general(HALUEVAL)
    assert len(general) == 4507 and sum(i.hallucinated for i in general) == 815


def test_measures_agree_with_scikit_learn():
    qa, _ = load_qa(HALUEVAL)
    items = qa[:400]
    truth = np.array([i.hallucinated for i in items])
    pred = np.array([f.hallucinated for f in GroundingDetector().detect([i.claim for i in items])])
    scores, _ = score_subset("qa", items, {"grounding": pred}, resamples=200, confidence=0.95, seed=0)
    got = {s.measure: s for s in scores}
    assert got["precision"].value == pytest.approx(precision_score(truth, pred))
    assert got["recall"].value == pytest.approx(recall_score(truth, pred))
    assert got["f1"].value == pytest.approx(f1_score(truth, pred))
    assert got["balanced_accuracy"].value == pytest.approx(balanced_accuracy_score(truth, pred))
    assert all(s.ci_low <= s.value <= s.ci_high for s in scores)


def test_length_rule_separates_the_whole_qa_set_but_not_the_matched_pairs():
    report = validate(GroundingDetector(), HALUEVAL, resamples=300, include_general=False, progress=lambda _: None)
    k = report.length_rule_words["qa"]
    qa, _ = load_qa(HALUEVAL)
    assert k == fit_length_rule(qa)
    bacc = {(s.subset, s.predictor): s.value for s in report.scores if s.measure == "balanced_accuracy"}
    assert bacc[("qa", f"length > {k} words")] > 0.9
    assert bacc[("qa length-matched", f"length > {k} words")] < 0.6
    assert bacc[("qa length-matched", "always hallucinated")] == 0.5
    (diff,) = [d for d in report.differences if d.subset == "qa length-matched" and d.measure == "balanced_accuracy"]
    assert diff.delta == pytest.approx(bacc[("qa length-matched", f"grounding v{GroundingDetector.version}")] - bacc[
        ("qa length-matched", f"length > {k} words")])
    assert diff.ci_low <= diff.delta <= diff.ci_high


def test_missing_files_and_bad_labels_are_clear_errors(tmp_path):
    with pytest.raises(HarnessError, match=r"qa_one-turn_data\.jsonl: file not found"):
        load_qa(tmp_path)
    (tmp_path / "general_data.jsonl").write_text(
        '{"ID": "1", "user_query": "q", "chatgpt_response": "r", "hallucination": "maybe"}\n')
    with pytest.raises(HarnessError, match="row 1: hallucination must be yes or no"):
        load_general(tmp_path)


def _balanced_accuracy(record: dict, subset: str, predictor: str) -> dict:
    (found,) = [s for s in record["scores"] if s["subset"] == subset and s["predictor"] == predictor
                and s["measure"] == "balanced_accuracy"]
    return found


def test_the_default_detector_holds_its_stated_figure():
    """The default grounding detector, as shipped, on the length-matched pairs: the balanced accuracy the
    README states (read from the recorded file it names) and inside that interval when computed now; the
    default tolerance is the value cross-validation chose in most folds."""
    record = json.loads(RECORDED.read_text())
    default = GroundingOptions().open(print)
    assert record["detector"] == default.describe()
    stated = _balanced_accuracy(record, "qa length-matched", f"grounding v{default.version}")
    _, matched = load_qa(HALUEVAL)
    scores, _ = score_subset("m", matched, {"now": np.array([f.hallucinated for f in default.detect(
        [i.claim for i in matched])])}, resamples=200, confidence=0.95, seed=1)
    now = next(s.value for s in scores if s.measure == "balanced_accuracy")
    assert stated["ci_low"] <= now <= stated["ci_high"]
    assert now >= 0.85, "the detector's goal on the length-matched pairs"
    cv = record["cross_validation"]
    chosen = [f["value"] for f in cv["folds"]]
    assert max(set(chosen), key=chosen.count) == default.tolerance
    held_out = _balanced_accuracy({"scores": cv["scores"]}, "qa length-matched", cv["predictor"])
    readme = " ".join((ROOT / "README.md").read_text().split())  # figures may wrap across lines
    for figure in (stated, held_out):
        assert f"{figure['value']:.3f} [{figure['ci_low']:.3f}, {figure['ci_high']:.3f}]" in readme
    assert RECORDED.relative_to(ROOT).as_posix() in readme


class _Lookup(Detector):
    """Judges each answer from a table: which answers it calls hallucinated."""

    name = "lookup"
    version = "1"

    def __init__(self, flagged: set[Claim]) -> None:
        self.flagged = flagged

    def detect(self, claims: list[Claim]) -> list[Finding]:
        return [Finding(hallucinated=c in self.flagged) for c in claims]


def test_cross_validation_never_tunes_on_the_questions_it_scores():
    """Setting k is right on fold k's questions and wrong everywhere else. Chosen on the other folds, no
    fold gets its own setting, so every held-out judgement is wrong; a choice that peeked would be perfect."""
    items = [LabelledClaim(Claim(f"answer {q} {wrong}", "passage", f"question {q}"), wrong, f"q{q}")
             for q in range(40) for wrong in (False, True)]
    splits = list(GroupKFold(n_splits=4).split(items, groups=[i.group for i in items]))

    def setting(k: float) -> Detector:
        test = {items[j].claim for j in splits[int(k)][1]}
        return _Lookup({i.claim for i in items if i.hallucinated == (i.claim in test)})

    result = cross_validate(setting, "k", (0.0, 1.0, 2.0, 3.0), items, {"all": items}, "lookup", folds=4,
                            resamples=50, progress=lambda _: None)
    assert all(f.value != f.fold for f in result.folds)
    held_out = {s.measure: s.value for s in result.scores}
    assert held_out["balanced_accuracy"] == 0.0 and held_out["recall"] == 0.0


def test_cross_validation_finds_the_setting_that_agrees_with_the_labels():
    _, matched = load_qa(HALUEVAL)
    truth = {i.claim for i in matched if i.hallucinated}
    result = cross_validate(lambda v: _Lookup(truth if v == 2 else set()), "v", (1.0, 2.0, 3.0), matched,
                            {"m": matched}, "lookup", folds=5, resamples=50, progress=lambda _: None)
    assert {f.value for f in result.folds} == {2.0}
    assert sum(f.test_answers for f in result.folds) == len(matched)
    assert {s.measure: s.value for s in result.scores}["balanced_accuracy"] == 1.0
    assert re.fullmatch(r"lookup, v by 5-fold CV \(held out\)", result.predictor)
