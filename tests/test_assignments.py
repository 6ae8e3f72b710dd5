"""Handing out a review plan's items, on a real SQLite ratings database: exact overlap (also with reviewers
working at once), holds that expire, saves only by the holder, gold items for everyone and the flag they raise,
and the gate leaving a flagged reviewer out."""

import threading
import time
from collections import Counter

import pytest

from harness.assignments import Assignments, human_ratings
from harness.errors import HarnessError
from harness.ratings import Output, Preference, RatingStore, Score, answer_sha256
from harness.review_plan import GoldItem, ReviewItem, ReviewPlan, draw_items

RUN = "run-1"
CANDS = ["base", "ft"]
EXAMPLES = [f"e{i:02d}" for i in range(8)]
ANSWERS = {Output("qa", ex, c): f"answer of {c} to {ex}" for ex in EXAMPLES for c in CANDS}
DIGESTS = {k: answer_sha256(v) for k, v in ANSWERS.items()}


def _plan(store, **settings) -> tuple[Assignments, list[ReviewItem]]:
    plan = ReviewPlan(**settings)
    items = draw_items(plan, "review.yaml", ANSWERS)
    assignments = Assignments(store)
    assignments.create(RUN, plan, items)
    return assignments, items


def _rate(assignments, item, reviewer, value=4, digests=DIGESTS) -> None:
    if item.is_gold:
        assignments.save_gold(RUN, item, reviewer, str(value), value <= 2)
    elif len(item.candidates) == 1:
        (cand,) = item.candidates
        assignments.save_score(item, Score(RUN, item.task, item.example_id, cand, reviewer, value, value, value,
                                           answer_sha256=digests[Output(item.task, item.example_id, cand)]))
    else:
        a, b = item.candidates
        assignments.save_preference(item, Preference(RUN, item.task, item.example_id, a, b, reviewer, "A", "",
                                                     DIGESTS[Output(item.task, item.example_id, a)],
                                                     DIGESTS[Output(item.task, item.example_id, b)]))


def _work_through(assignments, reviewer, limit=1000, value=4) -> list[ReviewItem]:
    done = []
    while len(done) < limit and (item := assignments.next_item(RUN, reviewer, DIGESTS)) is not None:
        _rate(assignments, item, reviewer, value)
        done.append(item)
    return done


def _per_item(store) -> Counter:
    return Counter((s.example_id, s.candidate) for s in store.scores(RUN))


def test_every_item_ends_with_exactly_overlap_reviewers(tmp_path):
    store = RatingStore(tmp_path / "ratings.sqlite")
    assignments, items = _plan(store, overlap=2)
    for reviewer in ("ada", "bob", "cy", "dee"):
        done = _work_through(assignments, reviewer, limit=5)
        assert len({i.key for i in done}) == len(done), "nobody meets an item twice"
    for reviewer in ("ada", "bob", "cy", "dee"):
        _work_through(assignments, reviewer)
    counts = _per_item(store)
    assert set(counts) == {(i.example_id, i.candidates[0]) for i in items}
    assert set(counts.values()) == {2}
    assert all(len({s.reviewer for s in store.scores(RUN) if (s.example_id, s.candidate) == k}) == 2 for k in counts)
    progress = assignments.progress(RUN, DIGESTS)
    assert progress.complete == progress.planned == len(items)
    assert sum(progress.by_reviewer.values()) == 2 * len(items)


def test_reviewers_at_once_never_take_an_items_last_place_twice(tmp_path):
    store = RatingStore(tmp_path / "ratings.sqlite")
    _, items = _plan(store, overlap=2)
    names = [f"r{i}" for i in range(6)]
    threads = [threading.Thread(target=_work_through, args=(Assignments(RatingStore(store.path)), name))
               for name in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = _per_item(store)
    assert len(counts) == len(items) and set(counts.values()) == {2}


def test_with_fewer_reviewers_than_overlap_items_stay_incomplete_and_progress_says_so(tmp_path):
    store = RatingStore(tmp_path / "ratings.sqlite")
    assignments, items = _plan(store, overlap=3)
    _work_through(assignments, "ada")
    _work_through(assignments, "bob")
    assert set(_per_item(store).values()) == {2}
    progress = assignments.progress(RUN, DIGESTS)
    assert progress.complete == 0 and {p.rated for p in progress.items} == {2}
    assert progress.by_reviewer == {"ada": len(items), "bob": len(items)}


def test_a_save_needs_the_item_held_and_an_unsaved_hold_expires(tmp_path):
    store = RatingStore(tmp_path / "ratings.sqlite")
    assignments, items = _plan(store, overlap=1, claim_minutes=0.01)
    held = assignments.next_item(RUN, "ada", DIGESTS)
    other = next(i for i in items if i != held)
    with pytest.raises(HarnessError, match="no longer yours"):
        _rate(assignments, other, "ada")  # never handed to ada
    assert assignments.next_item(RUN, "bob", DIGESTS) != held, "a held item is nobody else's"
    time.sleep(0.8)  # past the hold: the item goes back to the pool
    taken = [assignments.next_item(RUN, "cy", DIGESTS)]
    while taken[-1] != held:
        _rate(assignments, taken[-1], "cy")
        taken.append(assignments.next_item(RUN, "cy", DIGESTS))
    with pytest.raises(HarnessError, match="no longer yours"):
        _rate(assignments, held, "ada")
    _rate(assignments, held, "cy")
    assert [s.reviewer for s in store.scores(RUN) if (s.example_id, s.candidate) == (held.example_id,
                                                                                     held.candidates[0])] == ["cy"]


def test_a_reviewer_changes_their_own_rating_without_a_new_place(tmp_path):
    store = RatingStore(tmp_path / "ratings.sqlite")
    assignments, _ = _plan(store, overlap=1)
    item = assignments.next_item(RUN, "ada", DIGESTS)
    _rate(assignments, item, "ada", 4)
    _rate(assignments, item, "ada", 2)  # no hold needed to change one's own current rating
    (score,) = [s for s in store.scores(RUN) if s.example_id == item.example_id and s.candidate == item.candidates[0]]
    assert (score.reviewer, score.accuracy) == ("ada", 2)


def test_a_skipped_item_goes_to_someone_else(tmp_path):
    store = RatingStore(tmp_path / "ratings.sqlite")
    assignments, _ = _plan(store, overlap=1)
    first = assignments.next_item(RUN, "ada", DIGESTS)
    assignments.release(RUN, first, "ada")
    assert assignments.next_item(RUN, "ada", DIGESTS, skipped={first.key}) != first
    met = _work_through(assignments, "bob")
    assert first in met


def test_a_rewritten_answer_frees_its_place(tmp_path):
    store = RatingStore(tmp_path / "ratings.sqlite")
    assignments, items = _plan(store, overlap=1)
    _work_through(assignments, "ada")
    assert assignments.next_item(RUN, "bob", DIGESTS) is None, "every place is taken"
    rewritten = items[0]
    out = Output("qa", rewritten.example_id, rewritten.candidates[0])
    now = {**DIGESTS, out: answer_sha256("a new answer")}
    assert assignments.next_item(RUN, "bob", now) == rewritten
    assert assignments.progress(RUN, now).complete == len(items) - 1


def test_blind_plans_hand_out_pairs(tmp_path):
    store = RatingStore(tmp_path / "ratings.sqlite")
    assignments, items = _plan(store, mode="blind", overlap=2)
    assert {i.candidates for i in items} == {("base", "ft")} and len(items) == len(EXAMPLES)
    for name in ("ada", "bob", "cy"):
        _work_through(assignments, name)
    assert set(Counter(p.example_id for p in store.preferences(RUN)).values()) == {2}


GOLD = [GoldItem(task="qa", example_id=ex, answer="Paris is in Spain.", accuracy=1) for ex in EXAMPLES[:4]]


def test_every_reviewer_rates_every_gold_item_and_a_careless_one_is_flagged_and_left_out(tmp_path):
    store = RatingStore(tmp_path / "ratings.sqlite")
    assignments, items = _plan(store, overlap=1, gold=GOLD)
    gold = [i for i in items if i.is_gold]
    ada = _work_through(assignments, "ada", limit=len(items) // 2, value=1)  # right on gold (accuracy 1)
    bob = _work_through(assignments, "bob", value=5)  # rates everything 5: wrong on every gold item
    ada += _work_through(assignments, "ada", value=1)
    for met in (ada, bob):
        assert {i.key for i in gold} <= {i.key for i in met}, "every reviewer meets every gold item"
    plan_items = {(i.example_id, i.candidates[0]) for i in items if not i.is_gold}
    third_gold = [n for n, i in enumerate(bob) if i.is_gold][2]  # bob is flagged from his third gold item on
    assert not any(not i.is_gold for i in bob[third_gold:]), "once flagged, bob gets gold items only"
    assert any(not i.is_gold for i in bob[:third_gold]), "the data must let bob rate before he is flagged"
    assert {(s.example_id, s.candidate) for s in store.scores(RUN) if s.reviewer == "ada"} == plan_items, \
        "the places of a left-out reviewer go back to the pool"
    progress = assignments.progress(RUN, DIGESTS)
    records = {g.reviewer: g for g in progress.gold}
    assert (records["ada"].rated, records["ada"].right, records["ada"].flagged) == (4, 4, False)
    assert (records["bob"].rated, records["bob"].right, records["bob"].flagged) == (4, 0, True)
    assert progress.complete == progress.planned, "gold items take no place of the plan's items"
    assert {s.candidate for s in store.scores(RUN)} <= set(CANDS), "gold ratings never feed a candidate's"

    rated = human_ratings(tmp_path, RUN, ANSWERS)
    assert {s.reviewer for s in rated.scores} == {"ada"}
    assert set(rated.left_out) == {"bob"} and "0 of 4 gold" in rated.left_out["bob"]


def test_a_plan_may_keep_a_flagged_reviewer_in(tmp_path):
    store = RatingStore(tmp_path / "ratings.sqlite")
    assignments, _ = _plan(store, overlap=1, gold=GOLD, leave_out_flagged=False)
    _work_through(assignments, "bob", value=5)
    assert assignments.progress(RUN, DIGESTS).flagged() == {"bob": "right on 0 of 4 gold items"}
    rated = human_ratings(tmp_path, RUN, ANSWERS)
    assert {s.reviewer for s in rated.scores} == {"bob"} and not rated.left_out


def test_a_run_has_one_plan_unless_replaced_and_its_gold_ratings_go_with_it(tmp_path):
    store = RatingStore(tmp_path / "ratings.sqlite")
    assignments, items = _plan(store, overlap=1, gold=GOLD)
    _work_through(assignments, "bob", value=5)
    assert assignments.progress(RUN, DIGESTS).flagged()
    with pytest.raises(HarnessError, match="--replace"):
        assignments.create(RUN, ReviewPlan(overlap=2), items)
    assignments.create(RUN, ReviewPlan(overlap=2, gold=GOLD), items, replace=True)
    progress = assignments.progress(RUN, DIGESTS)
    assert progress.plan.overlap == 2 and progress.gold == [], "the old plan's gold record counts for nothing"
    assert sum(p.rated for p in progress.items) == len(store.scores(RUN)) > 0, \
        "ratings saved before the plan count toward its overlap"


def test_a_plan_draws_only_outputs_the_run_has():
    missing = Output("qa", EXAMPLES[0], "ft")
    items = draw_items(ReviewPlan(), "review.yaml", [o for o in ANSWERS if o != missing])
    assert len(items) == len(ANSWERS) - 1
    assert ReviewItem("qa", EXAMPLES[0], ("ft",)) not in items and ReviewItem("qa", EXAMPLES[0], ("base",)) in items
    pairs = draw_items(ReviewPlan(mode="blind"), "review.yaml", [o for o in ANSWERS if o != missing])
    assert [i.example_id for i in pairs] == EXAMPLES[1:]
