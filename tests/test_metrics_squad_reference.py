"""Exact match and token F1 against the SQuAD v1.1 evaluation script's definition (normalise_answer,
f1_score, exact_match_score, max over ground truths), written out here as the reference, on varied text.

One documented difference: where both answers normalise to nothing, v1.1 scores F1 0 and we score 1
(SQuAD v2.0's convention: an empty answer to an empty reference is right)."""

from __future__ import annotations

import collections
import re
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.metrics import get_metric
from tests.helpers import scoring_input


def squad_normalize(s: str) -> str:
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def squad_f1(prediction: str, ground_truth: str) -> float:
    prediction_tokens = squad_normalize(prediction).split()
    ground_truth_tokens = squad_normalize(ground_truth).split()
    common = collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def squad_em(prediction: str, ground_truth: str) -> float:
    return float(squad_normalize(prediction) == squad_normalize(ground_truth))


WORDS = st.sampled_from(["the", "The", "a", "An", "Paris", "paris", "1844", "river", "Seine", "left", "bank",
                         "don't", "U.S.", "co-op", "café", "Ünïcode", "x", "thesis", "another", "an"])
SEPARATORS = st.sampled_from([" ", "  ", "\n", "\t", ", ", ". ", "!", " - ", "'"])
TEXT = st.lists(st.tuples(WORDS, SEPARATORS), max_size=8).map(lambda parts: "".join(w + s for w, s in parts))


@settings(max_examples=300, deadline=None)
@given(prediction=TEXT, references=st.lists(TEXT, min_size=1, max_size=3))
def test_exact_match_and_token_f1_equal_the_squad_v11_definition(prediction, references):
    data = scoring_input([prediction], [references])
    em = get_metric("exact_match").values(data)[0]
    f1 = get_metric("token_f1").values(data)[0]
    assert em == max(squad_em(prediction, r) for r in references)
    both_empty = [not squad_normalize(prediction) and not squad_normalize(r) for r in references]
    expected_f1 = max(1.0 if empty else squad_f1(prediction, r) for r, empty in zip(references, both_empty,
                                                                                   strict=True))
    assert f1 == pytest.approx(expected_f1)


@pytest.mark.parametrize(("prediction", "reference", "em", "f1"), [
    ("The Seine.", "seine", 1.0, 1.0),
    ("on the left bank of the Seine", "Seine left bank", 0.0, 2 * (3 / 5) * 1 / (3 / 5 + 1)),
    ("an apple", "apple pie", 0.0, 2 * 1 * 0.5 / 1.5),
    ("", "Paris", 0.0, 0.0),
])
def test_worked_examples(prediction, reference, em, f1):
    data = scoring_input([prediction], [reference])
    assert get_metric("exact_match").values(data)[0] == em == squad_em(prediction, reference)
    assert get_metric("token_f1").values(data)[0] == pytest.approx(f1) == squad_f1(prediction, reference)
