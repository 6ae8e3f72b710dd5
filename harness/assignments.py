"""Handing out a review plan's items (review_plan.py) to reviewers, in the ratings database.

An item counts a reviewer while they hold it (shown to them, not yet saved, for the plan's `claim_minutes`) or
have a rating of its answer as it is now. A reviewer asking for their next item gets one they have neither
held nor rated, that fewer than `overlap` reviewers count, first in an order of their own (a hash of the
seed, their name and the item); every reviewer gets every gold item. Drawing and saving happen inside one
`BEGIN IMMEDIATE` transaction each, so two reviewers at once cannot both take an item's last place, and a
save is accepted only from a reviewer who holds the item (or changes their own current rating): an item
ends with at most `overlap` ratings, and with exactly that many once enough reviewers have worked through.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError
from harness.ratings import (
    HumanRatings,
    Output,
    Preference,
    RatingStore,
    Score,
    in_pair_order,
    write_preference,
    write_score,
)
from harness.review_plan import ReviewItem, ReviewPlan
from harness.store import ResultsDir


@dataclass(frozen=True)
class ItemProgress:
    item: ReviewItem
    rated: int    # reviewers with a rating of the answer(s) as they are now (gold: reviewers who rated it)
    held: int     # reviewers holding it, unsaved


@dataclass(frozen=True)
class GoldRecord:
    reviewer: str
    rated: int
    right: int
    flagged: bool

    @property
    def why(self) -> str:
        return f"right on {self.right} of {self.rated} gold items"


@dataclass(frozen=True)
class GoldRecords:
    records: list[GoldRecord]

    def flagged(self) -> dict[str, str]:
        return {g.reviewer: g.why for g in self.records if g.flagged}


def _gold_records(db: sqlite3.Connection, run_id: str, plan: ReviewPlan) -> GoldRecords:
    """Each reviewer's gold items rated and right; flagged below the plan's share once they rated enough."""
    rows = db.execute("SELECT reviewer, COUNT(*), SUM(is_right) FROM gold_ratings WHERE run_id = ? GROUP BY reviewer "
                      "ORDER BY reviewer", (run_id,)).fetchall()
    return GoldRecords([GoldRecord(r, n, int(right), n >= plan.gold_flag_after() and right / n < plan.gold_min_right)
                        for r, n, right in rows])


def _left_out(db: sqlite3.Connection, run_id: str, plan: ReviewPlan) -> dict[str, str]:
    """The reviewers the gold items flag, where the plan leaves them out of the gate (name -> their record)."""
    return _gold_records(db, run_id, plan).flagged() if plan.leave_out_flagged else {}


@dataclass(frozen=True)
class PlanProgress:
    plan: ReviewPlan
    items: list[ItemProgress]
    by_reviewer: dict[str, int]  # plan items (not gold) each reviewer has a current rating of
    gold: list[GoldRecord]

    @property
    def complete(self) -> int:
        return sum(p.rated >= self.plan.overlap for p in self.items if not p.item.is_gold)

    @property
    def planned(self) -> int:
        return sum(not p.item.is_gold for p in self.items)

    def flagged(self) -> dict[str, str]:
        return GoldRecords(self.gold).flagged()


def _order(plan: ReviewPlan, reviewer: str, item: ReviewItem) -> bytes:
    return hashlib.sha256(f"{plan.seed}\0{reviewer}\0{item.key}".encode()).digest()


class Assignments:
    def __init__(self, store: RatingStore) -> None:
        self.store = store

    def create(self, run_id: str, plan: ReviewPlan, items: list[ReviewItem], replace: bool = False) -> None:
        """Registers the plan of a run; a run has one plan, replaced only when asked (ratings stay)."""
        with self.store.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            if db.execute("SELECT 1 FROM review_plans WHERE run_id = ?", (run_id,)).fetchone() and not replace:
                db.execute("ROLLBACK")
                raise HarnessError(f"run {run_id} has a review plan already (--replace to replace it)")
            # Gold ratings go with the plan: a new plan's gold item number 0 is another item.
            for table in ("review_plans", "review_items", "claims", "gold_ratings"):
                db.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
            db.execute("INSERT INTO review_plans VALUES (?,?,?)", (run_id, plan.model_dump_json(), time.time()))
            db.executemany("INSERT INTO review_items VALUES (?,?,?,?,?,?)",
                           [(run_id, i.key, i.task, i.example_id, "\x1f".join(i.candidates), i.gold)
                            for i in items])
            db.execute("COMMIT")

    def plan(self, run_id: str) -> ReviewPlan | None:
        with self.store.connect() as db:
            row = db.execute("SELECT plan_json FROM review_plans WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else ReviewPlan.model_validate_json(row[0])

    def next_item(self, run_id: str, reviewer: str, digests: Mapping[Output, str],
                  skipped: Collection[str] = ()) -> ReviewItem | None:
        """The item the reviewer holds, or a new one taken for them; None when the plan has nothing left for
        them (`digests`: each output's answer sha256 now; `skipped`: item keys passed over this session)."""
        with self.store.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            plan, items = self._plan_items(db, run_id)
            db.execute("DELETE FROM claims WHERE run_id = ? AND claimed_at < ?",
                       (run_id, time.time() - plan.claim_minutes * 60))
            raters, holders = _raters(db, run_id, items, digests), _holders(db, run_id)
            left_out = set(_left_out(db, run_id, plan))
            taken = {i.key: (raters[i.key] - left_out) | holders[i.key] for i in items}
            mine = [i for i in items if reviewer in holders[i.key] and i.key not in skipped]
            # A reviewer the gold items flag, whose ratings the gate leaves out, gets gold items only.
            free = [i for i in items if reviewer not in raters[i.key] | holders[i.key] and i.key not in skipped
                    and (i.is_gold or (reviewer not in left_out and len(taken[i.key]) < plan.overlap))]
            pick = min(mine or free, key=lambda i: _order(plan, reviewer, i), default=None)
            if pick is not None and not mine:
                db.execute("INSERT INTO claims VALUES (?,?,?,?)", (run_id, pick.key, reviewer, time.time()))
            db.execute("COMMIT")
        return pick

    def left_out(self, run_id: str) -> dict[str, str]:
        """The reviewers whose ratings the gate leaves out (name -> why): those the run's plan flags, where it says
        so; none without a plan. Reads the plan and the gold records only."""
        with self.store.connect() as db:
            row = db.execute("SELECT plan_json FROM review_plans WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                return {}
            plan = ReviewPlan.model_validate_json(row[0])
            return {name: f"{why}, below the plan's {plan.gold_min_right:.0%}"
                    for name, why in _left_out(db, run_id, plan).items()}

    def rated_by(self, run_id: str, reviewer: str, digests: Mapping[Output, str]) -> list[ReviewItem]:
        """The plan items (not gold ones) the reviewer has a current rating of, in the plan's order."""
        with self.store.connect() as db:
            _, items = self._plan_items(db, run_id)
            raters = _raters(db, run_id, items, digests)
        return [i for i in items if not i.is_gold and reviewer in raters[i.key]]

    def release(self, run_id: str, item: ReviewItem, reviewer: str) -> None:
        """Passes an item over: it goes back to the pool for others."""
        with self.store.connect() as db:
            db.execute("DELETE FROM claims WHERE run_id = ? AND key = ? AND reviewer = ?", (run_id, item.key, reviewer))

    def save_score(self, item: ReviewItem, score: Score) -> None:
        now = {Output(score.task, score.example_id, score.candidate): score.answer_sha256}
        self._save(item, score.run_id, score.reviewer, now, lambda db: write_score(db, score))

    def save_preference(self, item: ReviewItem, pref: Preference) -> None:
        p = in_pair_order(pref)
        now = {Output(p.task, p.example_id, p.candidate_a): p.answer_a_sha256,
               Output(p.task, p.example_id, p.candidate_b): p.answer_b_sha256}
        self._save(item, p.run_id, p.reviewer, now, lambda db: write_preference(db, p))

    def save_gold(self, run_id: str, item: ReviewItem, reviewer: str, given: str, right: bool) -> None:
        """A gold item's rating: what the reviewer gave, and whether it is the known answer."""
        def write(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR REPLACE INTO gold_ratings VALUES (?,?,?,?,?,?)",
                       (run_id, item.gold, reviewer, given, int(right), time.time()))
        self._save(item, run_id, reviewer, {}, write)

    def _save(self, item: ReviewItem, run_id: str, reviewer: str, now: Mapping[Output, str],
              write: Callable[[sqlite3.Connection], None]) -> None:
        """Writes a rating of an item, only if the reviewer holds it or is changing their own rating of the
        answer as it is now (`now`: the rated answers' sha256); the hold ends with the save."""
        with self.store.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            _, items = self._plan_items(db, run_id)
            if item not in items:
                db.execute("ROLLBACK")
                raise HarnessError(f"{item.task} {item.example_id}: not an item of run {run_id}'s review plan")
            if reviewer not in _holders(db, run_id)[item.key] | _raters(db, run_id, [item], now)[item.key]:
                db.execute("ROLLBACK")
                raise HarnessError(f"{item.task} {item.example_id}: no longer yours to rate (left unsaved longer "
                                   "than the plan's claim time, it went back to the pool)")
            write(db)
            db.execute("DELETE FROM claims WHERE run_id = ? AND key = ? AND reviewer = ?", (run_id, item.key, reviewer))
            db.execute("COMMIT")

    def progress(self, run_id: str, digests: Mapping[Output, str]) -> PlanProgress | None:
        """Where the run's plan stands: each item's raters, each reviewer's count, each reviewer's gold record."""
        with self.store.connect() as db:
            if db.execute("SELECT 1 FROM review_plans WHERE run_id = ?", (run_id,)).fetchone() is None:
                return None
            plan, items = self._plan_items(db, run_id)
            raters, holders = _raters(db, run_id, items, digests), _holders(db, run_id)
            gold = _gold_records(db, run_id, plan)
        left_out = set(gold.flagged()) if plan.leave_out_flagged else set()
        by_reviewer: dict[str, int] = {}
        for i in items:
            for name in raters[i.key] if not i.is_gold else ():
                by_reviewer[name] = by_reviewer.get(name, 0) + 1
        # An item's count is of the ratings the gate counts: a left-out reviewer's place goes back to the pool.
        return PlanProgress(plan, [ItemProgress(i, len(raters[i.key] - (set() if i.is_gold else left_out)),
                                                len(holders[i.key] - raters[i.key])) for i in items],
                            dict(sorted(by_reviewer.items())), gold.records)

    def _plan_items(self, db: sqlite3.Connection, run_id: str) -> tuple[ReviewPlan, list[ReviewItem]]:
        row = db.execute("SELECT plan_json FROM review_plans WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise HarnessError(f"run {run_id} has no review plan (`harness reviewers plan {run_id} PLAN.yaml`)")
        items = [ReviewItem(task, ex, tuple(c for c in cands.split("\x1f") if c), gold) for task, ex, cands, gold in
                 db.execute("SELECT task, example_id, candidates, gold FROM review_items WHERE run_id = ? "
                            "ORDER BY rowid", (run_id,))]
        return ReviewPlan.model_validate_json(row[0]), items


def _holders(db: sqlite3.Connection, run_id: str) -> defaultdict[str, set[str]]:
    """Per item key, the reviewers holding it now."""
    out: defaultdict[str, set[str]] = defaultdict(set)
    for key, reviewer in db.execute("SELECT key, reviewer FROM claims WHERE run_id = ?", (run_id,)):
        out[key].add(reviewer)
    return out


def _raters(db: sqlite3.Connection, run_id: str, items: list[ReviewItem],
            digests: Mapping[Output, str]) -> defaultdict[str, set[str]]:
    """Per item key, the reviewers with a rating of its answer(s) as they are now (`digests`); for a gold item,
    those who rated it."""
    out: defaultdict[str, set[str]] = defaultdict(set)
    keys = {i.key for i in items}
    gold = {i.gold: i for i in items if i.is_gold}

    def current(task: str, example_id: str, candidate: str, sha: str) -> bool:
        return bool(sha) and digests.get(Output(task, example_id, candidate)) == sha

    for task, ex, cand, reviewer, sha in db.execute(
            "SELECT task, example_id, candidate, reviewer, answer_sha256 FROM scores WHERE run_id = ?", (run_id,)):
        key = ReviewItem(task, ex, (cand,)).key
        if key in keys and current(task, ex, cand, sha):
            out[key].add(reviewer)
    for task, ex, a, b, reviewer, sha_a, sha_b in db.execute(
            "SELECT task, example_id, candidate_a, candidate_b, reviewer, answer_a_sha256, answer_b_sha256 FROM "
            "preferences WHERE run_id = ?", (run_id,)):
        key = ReviewItem(task, ex, (a, b)).key
        if key in keys and current(task, ex, a, sha_a) and current(task, ex, b, sha_b):
            out[key].add(reviewer)
    for number, reviewer in db.execute("SELECT gold, reviewer FROM gold_ratings WHERE run_id = ?", (run_id,)):
        if number in gold and gold[number].key in keys:
            out[gold[number].key].add(reviewer)
    return out


def human_ratings(results: Path, run_id: str, answers: Mapping[Output, str]) -> HumanRatings | None:
    """The reviewers' ratings of a run's answers as they are now (`answers`: each output's text), as the gate
    counts them: where the run's review plan says so, without the reviewers its gold items flagged. None when
    nobody has rated."""
    path = ResultsDir(results).ratings_db
    if not path.is_file():
        return None
    store = RatingStore(path)
    rated = store.of_run(run_id).of_answers(answers)
    left_out = Assignments(store).left_out(run_id)
    return rated.without(left_out) if left_out else rated
