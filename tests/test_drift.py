"""Drift signals on real data: Banking77 messages against other Banking77 messages (no drift), and
CLINC150's banking queries (same needs, other people and banks) against Banking77 (drift)."""

from __future__ import annotations

import math
from collections import Counter
from functools import reduce
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from harness.config import load_task
from harness.drift import DRIFT_SIGNALS, DriftInput, Side, StreamedSignal
from harness.drift.inputs import _auc_interval, rising_terms, words
from harness.drift.window import Reservoir

ROOT = Path(__file__).resolve().parents[1]
BANKING = load_task("banking77")
TRAIN = pd.read_csv(ROOT / "tasks" / "banking77" / "train.csv")
CLINC = pd.read_csv(ROOT / "examples" / "traffic" / "clinc150_banking.csv")


def split_banking(seed: int, n: int) -> tuple[Side, Side]:
    order = np.random.default_rng(seed).permutation(len(TRAIN))
    ref, new = TRAIN.iloc[order[:6000]], TRAIN.iloc[order[6000:6000 + n]]
    return (Side(ref.text.tolist(), labels=ref.category.tolist()),
            Side(new.text.tolist(), labels=new.category.tolist()))


def measure(name: str, reference: Side, traffic: Side, seed: int = 0):
    return DRIFT_SIGNALS[name].measure(DriftInput(BANKING, reference, traffic, resamples=500, seed=seed))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_drift_within_banking77(seed):
    reference, traffic = split_banking(seed, 150)
    auc = measure("domain_auc", reference, traffic, seed)
    assert auc.ci_low < 0.5 < auc.ci_high or abs(auc.value - 0.5) < 0.1
    rate = measure("new_term_rate", reference, traffic, seed)
    assert rate.ci_low < 0 < rate.ci_high
    length = measure("input_length_change", reference, traffic, seed)
    assert length.ci_low < 0 < length.ci_high
    shift = measure("label_shift", reference, traffic, seed)
    assert shift.p_value > 0.01


def test_clinc_banking_queries_are_drift_with_their_new_words():
    reference, _ = split_banking(0, 0)
    sample = CLINC.sample(150, random_state=0)
    traffic = Side(sample.text.tolist())
    auc = measure("domain_auc", reference, traffic)
    assert auc.ci_low > 0.8
    rate = measure("new_term_rate", reference, traffic)
    assert rate.ci_low > 0.2
    new = [t["term"] for t in rate.detail["new_terms"]]
    # CLINC's own intents and bank names, words Banking77's customers never wrote.
    assert {"routing", "chase"} <= set(new[:10])
    for term in new:
        assert not any(term in words(text) for text in reference.texts)


def test_label_shift_finds_a_moved_label_and_names_it():
    reference = Side(["x"] * 400, labels=["a"] * 200 + ["b"] * 200)
    same = Side(["x"] * 200, labels=["a"] * 100 + ["b"] * 100)
    moved = Side(["x"] * 200, labels=["a"] * 140 + ["b"] * 40 + [None] * 20)
    assert measure("label_shift", reference, same).value == 0.0
    result = measure("label_shift", reference, moved)
    assert result.value == pytest.approx(0.3)  # half of |0.7-0.5| + |0.2-0.5| + |0.1-0| (invalid answers)
    assert result.p_value < 0.01
    assert result.detail["label_changes"][0] == {"label": "b", "traffic": 0.2, "reference": 0.5}


def test_permutation_p_values_are_uniform_without_shift():
    rng = np.random.default_rng(7)
    labels = list("abcdefghij")
    ps = []
    for seed in range(60):
        ref = Side(["x"] * 300, labels=list(rng.choice(labels, 300)))
        new = Side(["x"] * 100, labels=list(rng.choice(labels, 100)))
        ps.append(DRIFT_SIGNALS["label_shift"].measure(DriftInput(BANKING, ref, new, resamples=200, seed=seed)).p_value)
    assert 0.3 < np.mean(ps) < 0.7
    assert np.mean(np.array(ps) < 0.1) < 0.25


def test_auc_matches_scikit_learn_with_ties_and_its_interval_covers():
    rng = np.random.default_rng(0)
    pos, neg = rng.integers(0, 5, 40).astype(float), rng.integers(0, 4, 60).astype(float)
    expected = roc_auc_score(np.r_[np.ones(40), np.zeros(60)], np.r_[pos, neg])
    value, low, high = _auc_interval(pos, neg, 0.95)
    assert value == pytest.approx(expected) and low < value < high
    # DeLong's interval covers the true AUC (0.76 for these two normals) about 95% of the time.
    truth = 0.5 * (1 + math.erf(1.0 / 2))  # P(N(1, 1) > N(0, 1)) = Phi(1 / sqrt(2))
    covered = [low <= truth <= high for low, high in
               (_auc_interval(rng.normal(1, 1, 80), rng.normal(0, 1, 120), 0.95)[1:] for _ in range(400))]
    assert 0.92 <= np.mean(covered) <= 0.98


def test_length_change_is_the_relative_change_of_mean_words():
    reference = Side(["one two three four"] * 50)
    traffic = Side(["one two three four five six"] * 50)
    result = measure("input_length_change", reference, traffic)
    assert result.value == pytest.approx(0.5)
    outputs = DRIFT_SIGNALS["answer_length_change"].measure(DriftInput(
        BANKING, Side(["q"] * 10, outputs=["a b"] * 10), Side(["q"] * 10, outputs=["a"] * 10), resamples=200))
    assert outputs.value == pytest.approx(-0.5)


def test_rising_terms_surface_a_word_that_became_frequent():
    reference = Counter(w for i in range(300) for w in set(words(f"my card number {i} is lost")))
    traffic = Counter(w for i in range(100)
                      for w in set(words(f"my revolut card {i} is lost" if i % 2 else f"card {i} lost")))
    rising = rising_terms(reference, 300, traffic, 100)
    assert rising[0]["term"] == "revolut"
    assert "card" not in [t["term"] for t in rising]


def test_signals_that_need_outputs_or_labels_do_not_apply_without_them():
    inp = DriftInput(BANKING, Side(["a"]), Side(["b"]))
    applicable = {name for name, s in DRIFT_SIGNALS.items() if s.applies(inp)}
    assert applicable == {"input_length_change", "new_term_rate", "domain_auc"}


@pytest.mark.parametrize("name", ["input_length_change", "answer_length_change", "new_term_rate", "label_shift"])
def test_a_streamed_signal_reads_the_same_from_merged_chunks_as_from_all_rows(name):
    """The monitor never holds a window's rows: it merges each chunk's statistics. The reading must be the one the
    signal gives on all the rows at once."""
    order = np.random.default_rng(5).permutation(len(TRAIN))
    ref, new = TRAIN.iloc[order[:3000]], TRAIN.iloc[order[3000:3900]]
    reference = Side(ref.text.tolist(), ref.category.tolist(), ref.category.tolist())
    traffic = Side(new.text.tolist(), new.category.str.replace("_", " ").tolist(), new.category.tolist())
    signal = DRIFT_SIGNALS[name]
    assert isinstance(signal, StreamedSignal)
    inp = DriftInput(BANKING, reference, traffic, resamples=300, seed=3)
    prepared = signal.prepare(inp)
    chunks = [Side(traffic.texts[a:b], traffic.outputs[a:b], traffic.labels[a:b])  # type: ignore[index]
              for a, b in ((0, 250), (250, 251), (251, 900))]
    merged = reduce(signal.merge, [signal.summarize(c, prepared) for c in chunks])
    streamed, whole = signal.compare(inp, prepared, merged), signal.measure(inp)
    assert (streamed.value, streamed.ci_low, streamed.ci_high, streamed.p_value) == \
        (whole.value, whole.ci_low, whole.ci_high, whole.p_value)
    assert streamed.evidence == whole.evidence


def test_label_shift_interval_is_sound_without_shift_and_covers_a_known_one():
    """The plug-in TVD of 20 labels on 400 rows is about 0.1 with no shift at all; the interval's lower bound must
    still stay at 0 (so an at_most rule never alerts on noise) in at least 95% of draws, and cover a true TVD."""
    rng = np.random.default_rng(11)
    names = [f"l{i}" for i in range(20)]
    p = rng.dirichlet(np.full(20, 2.0))
    q = 0.8 * p + 0.2 * np.eye(20)[0]  # a fifth of the traffic moved to one label
    heavy = 0.5 * p + 0.5 * np.eye(20)[0]  # half of it
    true_tvd = 0.5 * np.abs(p - q).sum()
    above_zero, covered, alerted = [], [], []
    for seed in range(200):
        ref = Side(["x"] * 2000, labels=list(rng.choice(names, 2000, p=p)))
        same = Side(["x"] * 400, labels=list(rng.choice(names, 400, p=p)))
        moved = Side(["x"] * 400, labels=list(rng.choice(names, 400, p=q)))
        quiet = measure("label_shift", ref, same, seed)
        shifted = measure("label_shift", ref, moved, seed)
        above_zero.append(quiet.ci_low > 0)
        covered.append(shifted.ci_low <= true_tvd <= shifted.ci_high)
        alerted.append(measure("label_shift", ref, Side(["x"] * 400, labels=list(rng.choice(names, 400, p=heavy))),
                               seed).ci_low > 0.2)
    assert quiet.value > 0.05  # the noise the interval has to see through
    assert np.mean(above_zero) <= 0.05  # nominally 2.5%: the bound is one side of a 95% interval
    assert np.mean(covered) >= 0.93
    # Half the traffic moved to one label (a TVD near 0.5) breaks the default rule, at most 0.2, in nearly every draw.
    assert np.mean(alerted) >= 0.95


def test_the_reservoir_keeps_every_item_with_the_same_chance():
    rng = np.random.default_rng(0)
    kept = np.zeros(100)
    for _ in range(2000):
        reservoir = Reservoir(10, rng)
        for start in range(0, 100, 7):
            reservoir.add(list(range(start, min(start + 7, 100))))
        assert len(reservoir.items) == len(set(reservoir.items)) == 10 and reservoir.seen == 100
        kept[reservoir.items] += 1
    # Each item is kept with probability 0.1: 200 of 2000 runs, a standard deviation of 13.4.
    assert np.abs(kept - 200).max() < 55
