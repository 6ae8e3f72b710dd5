import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from harness.metrics import get_metric
from harness.metrics.base import Resample
from harness.metrics.classification import parse_label, per_class_f1
from tests.helpers import scoring_input

LABELS = ["card_arrival", "card_linking", "exchange_rate", "pin_blocked"]


@pytest.mark.parametrize(("text", "expected"), [
    ("card_arrival", "card_arrival"),
    ("  Card Arrival. ", "card_arrival"),
    ('"exchange-rate"', "exchange_rate"),
    ("pin_blocked\nbecause the user typed it wrong", "pin_blocked"),
    ("The intent is card_linking.", "card_linking"),
    ("card", None),
    ("", None),
    ("something else entirely", None),
])
def test_parse_label(text, expected):
    assert parse_label(text, LABELS) == expected


def test_parse_label_prefers_the_longest_contained_label():
    assert parse_label("it is card_arrival_late", ["card_arrival", "card_arrival_late"]) == "card_arrival_late"


def _data():
    refs = ["card_arrival", "card_arrival", "card_linking", "exchange_rate", "pin_blocked", "pin_blocked",
            "exchange_rate", "card_linking"]
    texts = ["card_arrival", "card linking", "card_linking", "nonsense", "pin_blocked", "exchange_rate",
             "Exchange rate", "card_linking"]
    return scoring_input(texts, refs, labels=LABELS), refs, [parse_label(t, LABELS) for t in texts]


def test_against_scikit_learn():
    data, refs, preds = _data()
    valid = sorted(set(refs) | {p for p in preds if p})
    preds_sk = [p if p else "__invalid__" for p in preds]
    for name, expected in [
        ("accuracy", accuracy_score(refs, preds_sk)),
        ("macro_f1", f1_score(refs, preds_sk, labels=valid, average="macro", zero_division=0)),
        ("micro_f1", f1_score(refs, preds_sk, labels=valid, average="micro", zero_division=0)),
    ]:
        metric = get_metric(name)
        assert metric.value(metric.stats(data), len(refs)) == pytest.approx(expected), name


def test_by_hand():
    data, _, _ = _data()
    # 5 of 8 right; one answer ("nonsense") names no label.
    acc = get_metric("accuracy")
    assert acc.value(acc.stats(data), 8) == pytest.approx(5 / 8)
    inv = get_metric("invalid_label_rate")
    assert inv.value(inv.stats(data), 8) == pytest.approx(1 / 8)
    # card_arrival: tp1 fn1 -> 2/3; card_linking: tp2 fp1 -> 4/5; exchange_rate: tp1 fp1 fn1 -> 1/2;
    # pin_blocked: tp1 fn1 -> 2/3.
    expected = {"card_arrival": 2 / 3, "card_linking": 4 / 5, "exchange_rate": 1 / 2, "pin_blocked": 2 / 3}
    assert per_class_f1(data) == pytest.approx(expected)
    macro = get_metric("macro_f1")
    assert macro.value(macro.stats(data), 8) == pytest.approx(np.mean(list(expected.values())))


def test_failed_request_counts_as_invalid():
    data = scoring_input(["card_arrival", "card_arrival"], ["card_arrival", "pin_blocked"], labels=LABELS,
                         errors=[None, "HTTP 500"])
    inv = get_metric("invalid_label_rate")
    assert inv.value(inv.stats(data), 2) == pytest.approx(0.5)


def test_macro_f1_on_a_resample_matches_scikit_learn():
    data, refs, preds = _data()
    macro = get_metric("macro_f1")
    stats = macro.stats(data)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 8, size=(20, 8))
    got = macro.aggregate(stats, Resample(idx))
    for row, value in zip(idx, got, strict=True):
        r = [refs[i] for i in row]
        p = [preds[i] or "__invalid__" for i in row]
        valid = sorted(set(r) | {x for x in p if x != "__invalid__"})
        assert value == pytest.approx(f1_score(r, p, labels=valid, average="macro", zero_division=0))
