import numpy as np
import pytest
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU, CHRF

from harness.metrics import get_metric
from harness.metrics.text import normalise_answer, token_f1
from tests.helpers import scoring_input

HYPS = ["the cat sat on the mat", "a dog barked loudly at night", "you may cancel at any time", ""]
REFS = ["the cat is on the mat", "the dog barked at night", ["you can cancel whenever you want",
                                                             "cancel at any time"], "nothing"]


def _value(name, data):
    metric = get_metric(name)
    return metric.value(metric.stats(data), len(data.examples))


def test_rouge1_by_hand():
    # "the cat sat on the mat" vs "the cat is on the mat": 5 of 6 unigrams match each way.
    data = scoring_input(HYPS[:1], REFS[:1])
    assert _value("rouge1", data) == pytest.approx(5 / 6)


@pytest.mark.parametrize(("name", "rouge_type"), [("rouge1", "rouge1"), ("rouge2", "rouge2"), ("rouge_l", "rougeL")])
def test_rouge_against_rouge_score_best_reference(name, rouge_type):
    data = scoring_input(HYPS, REFS)
    scorer = rouge_scorer.RougeScorer([rouge_type], use_stemmer=True)
    expected = []
    for h, r in zip(HYPS, REFS, strict=True):
        refs = r if isinstance(r, list) else [r]
        expected.append(max(scorer.score(ref, h)[rouge_type].fmeasure for ref in refs))
    assert _value(name, data) == pytest.approx(np.mean(expected))


def test_bleu_and_chrf_match_sacrebleu_corpus_scores():
    hyps = HYPS[:2]
    refs = REFS[:2]
    data = scoring_input(hyps, refs)
    assert _value("bleu", data) == pytest.approx(BLEU().corpus_score(hyps, [refs]).score)
    assert _value("chrf", data) == pytest.approx(CHRF().corpus_score(hyps, [refs]).score)


def test_bleu_with_several_references_matches_sacrebleu():
    hyps = ["you may cancel at any time", "the cat sat on the mat"]
    refs = [["you can cancel whenever you want", "cancel at any time"], ["the cat is on the mat"]]
    data = scoring_input(hyps, refs)
    streams = [["you can cancel whenever you want", "the cat is on the mat"],
               ["cancel at any time", "the cat is on the mat"]]
    assert _value("bleu", data) == pytest.approx(BLEU().corpus_score(hyps, streams).score)


def test_perfect_translation_scores_100():
    data = scoring_input(["le patient a de la fièvre ce soir"], ["le patient a de la fièvre ce soir"])
    assert _value("bleu", data) == pytest.approx(100.0)
    assert _value("chrf", data) == pytest.approx(100.0)


def test_exact_match_and_token_f1_by_hand():
    assert normalise_answer("The  Eiffel Tower!") == "eiffel tower"
    # pred {president, richard, nixon} vs ref {richard, nixon}: p = 2/3, r = 1 -> f1 = 0.8
    assert token_f1("President Richard Nixon", "Richard Nixon") == pytest.approx(0.8)
    assert token_f1("", "") == 1.0
    assert token_f1("Delhi", "Mumbai") == 0.0
    data = scoring_input(["The Delhi.", "President Richard Nixon", "no"], ["delhi", ["Nixon", "Richard Nixon"], "yes"])
    assert _value("exact_match", data) == pytest.approx(1 / 3)
    assert _value("token_f1", data) == pytest.approx((1 + 0.8 + 0) / 3)
