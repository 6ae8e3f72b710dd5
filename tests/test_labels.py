"""Reviewers' labels for corrected metrics (harness.labels), on a real SQLite ratings database: the seeded order,
the usable prefix, one reviewer per answer (also with reviewers working at once), saves only by the holder, and
labels that stop counting when their answer changes."""

import threading
from collections import Counter

import pytest

from harness import labels as labels_module
from harness.errors import HarnessError
from harness.labels import Label, LabelStore, current_labels, label_order, label_queue, labelled_prefix
from harness.ratings import Output, RatingStore, answer_sha256

RUN, METRIC = "run-1", "hallucination_rate"
CANDS = ["base", "ft"]
EXAMPLES = [f"e{i:02d}" for i in range(12)]
QUEUE = label_queue(7, METRIC, "qa", EXAMPLES, CANDS)
DIGESTS = {o: answer_sha256(f"answer of {o.candidate} to {o.example_id}") for o in QUEUE}


def _label(out: Output, reviewer: str, value: float | None = 0.0, digests=DIGESTS) -> Label:
    return Label(RUN, METRIC, out.task, out.example_id, out.candidate, reviewer, value, digests[out])


def test_the_order_is_a_permutation_fixed_by_the_seed_whatever_order_the_ids_come_in():
    order = label_order(7, METRIC, "qa", EXAMPLES)
    assert sorted(order) == EXAMPLES and order != EXAMPLES
    assert label_order(7, METRIC, "qa", reversed(EXAMPLES)) == order
    assert label_order(7, METRIC, "qa", [*EXAMPLES, *EXAMPLES[:3]]) == order, "a repeated id is one example"
    assert label_order(8, METRIC, "qa", EXAMPLES) != order
    assert label_order(7, "quality", "qa", EXAMPLES) != order, "each metric has its own sample"


def test_the_queue_gives_every_candidate_s_answer_to_an_example_before_the_next_example():
    order = label_order(7, METRIC, "qa", EXAMPLES)
    assert [o.example_id for o in QUEUE] == [ex for ex in order for _ in CANDS]
    assert all({o.candidate for o in QUEUE[i:i + 2]} == set(CANDS) for i in range(0, len(QUEUE), 2))
    assert len({tuple(o.candidate for o in QUEUE[i:i + 2]) for i in range(0, len(QUEUE), 2)}) == 2, \
        "the candidates come in an order of their own for each example, so a place in the queue names no one"
    assert label_queue(7, METRIC, "qa", reversed(EXAMPLES), CANDS[::-1]) == QUEUE


def test_the_usable_prefix_stops_at_the_first_gap():
    order = ["c", "a", "d", "b"]
    assert labelled_prefix(order, ["a", "c", "b"]) == ["c", "a"]
    assert labelled_prefix(order, ["a", "d", "b"]) == []
    assert labelled_prefix(order, order[::-1]) == order


def test_labelling_goes_down_the_queue_and_ends(tmp_path):
    store = LabelStore(RatingStore(tmp_path / "ratings.sqlite"))
    done = []
    while (out := store.next_answer(RUN, METRIC, "ada", QUEUE, DIGESTS)) is not None:
        assert store.next_answer(RUN, METRIC, "ada", QUEUE, DIGESTS) == out, "a reviewer keeps the answer they hold"
        store.save(_label(out, "ada", None if len(done) % 3 == 0 else 1.0))
        done.append(out)
    assert done == QUEUE
    saved = store.labels(RUN, METRIC)
    assert [lab.output for lab in saved] == QUEUE and saved[0].value is None and saved[1].value == 1.0
    assert store.labels(RUN, "quality") == []


def test_no_answer_goes_to_two_reviewers_working_at_once(tmp_path):
    path = tmp_path / "ratings.sqlite"
    LabelStore(RatingStore(path))
    taken: list[tuple[str, Output]] = []
    errors: list[Exception] = []
    lock, start = threading.Lock(), threading.Barrier(6)

    def work(reviewer: str) -> None:
        store = LabelStore(RatingStore(path))
        start.wait()
        try:
            while (out := store.next_answer(RUN, METRIC, reviewer, QUEUE, DIGESTS)) is not None:
                with lock:
                    taken.append((reviewer, out))
                store.save(_label(out, reviewer))
        except HarnessError as exc:  # a save refused: the answer went to someone else as well
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"r{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert Counter(out for _, out in taken) == Counter(QUEUE), "every answer handed out exactly once"
    labelled = {lab.output: lab.reviewer for lab in LabelStore(RatingStore(path)).labels(RUN)}
    assert labelled == {out: reviewer for reviewer, out in taken}
    assert len({reviewer for reviewer, _ in taken}) > 1


def test_a_held_answer_goes_to_no_one_else_until_its_hold_runs_out(tmp_path, monkeypatch):
    store = LabelStore(RatingStore(tmp_path / "ratings.sqlite"))
    first = store.next_answer(RUN, METRIC, "ada", QUEUE, DIGESTS)
    assert first == QUEUE[0]
    assert store.next_answer(RUN, METRIC, "bob", QUEUE, DIGESTS) == QUEUE[1]
    with pytest.raises(HarnessError, match="no longer yours"):
        store.save(_label(first, "bob"))
    monkeypatch.setattr(labels_module, "HOLD_MINUTES", 0.0)  # every hold has run out
    assert store.next_answer(RUN, METRIC, "cy", QUEUE, DIGESTS) == first
    with pytest.raises(HarnessError, match="no longer yours"):
        store.save(_label(first, "ada"))
    assert store.labels(RUN) == []


def test_a_save_without_the_hold_is_refused_but_a_reviewer_may_change_their_own_label(tmp_path):
    store = LabelStore(RatingStore(tmp_path / "ratings.sqlite"))
    with pytest.raises(HarnessError, match="no longer yours"):
        store.save(_label(QUEUE[0], "ada"))
    out = store.next_answer(RUN, METRIC, "ada", QUEUE, DIGESTS)
    store.save(_label(out, "ada", 0.0))
    store.save(_label(out, "ada", 1.0))
    with pytest.raises(HarnessError, match="no longer yours"):
        store.save(_label(out, "bob", 0.0))
    assert [(lab.reviewer, lab.value) for lab in store.labels(RUN)] == [("ada", 1.0)]


def test_a_label_of_an_answer_since_rewritten_no_longer_counts(tmp_path):
    store = LabelStore(RatingStore(tmp_path / "ratings.sqlite"))
    for _ in range(3):
        store.save(_label(store.next_answer(RUN, METRIC, "ada", QUEUE, DIGESTS), "ada"))
    assert list(current_labels(store.labels(RUN), DIGESTS)) == QUEUE[:3]
    rewritten = {**DIGESTS, QUEUE[1]: answer_sha256("a regenerated answer")}
    assert list(current_labels(store.labels(RUN), rewritten)) == [QUEUE[0], QUEUE[2]]
    assert store.next_answer(RUN, METRIC, "ada", QUEUE, rewritten) == QUEUE[1], "the new answer is back in the queue"
    with pytest.raises(HarnessError, match="no longer yours"):  # ada holds it now
        store.save(_label(QUEUE[1], "bob", digests=rewritten))
