"""Detector validation on the real HaluEval files: counts, the length-matched subset, the length rule,
and every measure against scikit-learn on the same predictions."""

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, precision_score, recall_score

from harness.detectors.grounding import GroundingDetector
from harness.detectors.validation import fit_length_rule, load_general, load_qa, score_subset, validate
from harness.errors import HarnessError

HALUEVAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "halueval"
needs_data = pytest.mark.skipif(not HALUEVAL.is_dir(), reason="../shared/data/halueval is not here")


@needs_data
def test_halueval_sets():
    qa, matched = load_qa(HALUEVAL)
    assert len(qa) == 2000 and sum(i.hallucinated for i in qa) == 1000
    assert len(matched) == 136  # 68 pairs whose answers differ by at most one word
    for right, wrong in zip(matched[::2], matched[1::2], strict=True):
        assert abs(len(right.claim.answer.split()) - len(wrong.claim.answer.split())) <= 1
    general = load_general(HALUEVAL)
    assert len(general) == 4507 and sum(i.hallucinated for i in general) == 815


@needs_data
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


@needs_data
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
    assert diff.delta == pytest.approx(bacc[("qa length-matched", "grounding v2")] - bacc[
        ("qa length-matched", f"length > {k} words")])
    assert diff.ci_low <= diff.delta <= diff.ci_high


def test_missing_files_and_bad_labels_are_clear_errors(tmp_path):
    with pytest.raises(HarnessError, match=r"qa_one-turn_data\.jsonl: file not found"):
        load_qa(tmp_path)
    (tmp_path / "general_data.jsonl").write_text(
        '{"ID": "1", "user_query": "q", "chatgpt_response": "r", "hallucination": "maybe"}\n')
    with pytest.raises(HarnessError, match="row 1: hallucination must be yes or no"):
        load_general(tmp_path)
