"""Reviewers' labels of single answers for a machine-scored metric (is every claim supported? the judge's rubric),
in the ratings database: the truth a prediction-powered correction (harness.ppi) sets the machine against.

The harness, not the reviewer, picks what is labelled: for each metric and task, the task's examples in a
uniformly random order fixed by the run's seed (`label_order`), every candidate's answer to an example before the
next example. Labelling goes down that order, one reviewer per answer, so each candidate's labelled examples are
a prefix of a uniform random permutation, a uniformly random sample however many have been labelled, and two
candidates are labelled on the same examples (their paired difference is corrected on those). An answer left
unlabelled (someone's hold expired) ends the usable prefix at it (`labelled_prefix`): skipping a hard answer
would bias the sample, so there is no skip, only "cannot tell", which the correction counts at the candidate's
worst. A label counts while the answer it labelled is unchanged (its sha256)."""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError
from harness.ratings import Output, RatingStore
from harness.store import ResultsDir

HOLD_MINUTES = 30.0  # an answer shown to a labeller and left unlabelled this long goes to the next labeller

_TABLES = (
    """CREATE TABLE IF NOT EXISTS labels (run_id TEXT NOT NULL, metric TEXT NOT NULL, task TEXT NOT NULL,
    example_id TEXT NOT NULL, candidate TEXT NOT NULL, reviewer TEXT NOT NULL, value REAL,
    answer_sha256 TEXT NOT NULL, labelled_at REAL NOT NULL,
    PRIMARY KEY (run_id, metric, task, example_id, candidate))""",
    """CREATE TABLE IF NOT EXISTS label_holds (run_id TEXT NOT NULL, metric TEXT NOT NULL, task TEXT NOT NULL,
    example_id TEXT NOT NULL, candidate TEXT NOT NULL, reviewer TEXT NOT NULL, held_at REAL NOT NULL,
    PRIMARY KEY (run_id, metric, task, example_id, candidate))""",
)


@dataclass(frozen=True)
class Label:
    run_id: str
    metric: str  # the machine-scored metric the label is for (hallucination_rate, a judge's name)
    task: str
    example_id: str
    candidate: str
    reviewer: str
    value: float | None  # on the metric's scale; None: the reviewer could not tell
    answer_sha256: str

    @property
    def output(self) -> Output:
        return Output(self.task, self.example_id, self.candidate)


def label_order(seed: int, metric: str, task: str, example_ids: Iterable[str]) -> list[str]:
    """A task's examples in the order they are labelled for a metric: a uniformly random permutation, fixed by the
    run's seed (independent of the order the ids come in)."""
    ids = sorted(set(example_ids))
    random.Random(f"{seed}\0{metric}\0{task}").shuffle(ids)
    return ids


def labelled_prefix(order: Sequence[str], labelled: Iterable[str]) -> list[str]:
    """The longest prefix of `order` every example of which is in `labelled`: the examples the correction may use
    (a uniformly random sample, whatever order people actually labelled in)."""
    have = set(labelled)
    out = []
    for example_id in order:
        if example_id not in have:
            break
        out.append(example_id)
    return out


class LabelStore:
    """The labels of a results folder's runs, beside its ratings (one SQLite database, WAL mode)."""

    def __init__(self, store: RatingStore) -> None:
        self.store = store
        with store.connect() as db:
            for table in _TABLES:
                db.execute(table)

    def labels(self, run_id: str, metric: str | None = None) -> list[Label]:
        query = ("SELECT run_id, metric, task, example_id, candidate, reviewer, value, answer_sha256 FROM labels "
                 "WHERE run_id = ?" + (" AND metric = ?" if metric is not None else "") + " ORDER BY labelled_at")
        with self.store.connect() as db:
            return [Label(*row) for row in db.execute(query, (run_id,) if metric is None else (run_id, metric))]

    def next_answer(self, run_id: str, metric: str, reviewer: str, queue: Sequence[Output],
                    digests: Mapping[Output, str]) -> Output | None:
        """The answer the reviewer holds in this queue, or the first one nobody has labelled (as it is now) nor
        holds, now held for them; None when every answer of the queue is labelled or held."""
        with self.store.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM label_holds WHERE run_id = ? AND held_at < ?",
                       (run_id, time.time() - HOLD_MINUTES * 60))
            holds = {Output(t, e, c): who for t, e, c, who in db.execute(
                "SELECT task, example_id, candidate, reviewer FROM label_holds WHERE run_id = ? AND metric = ?",
                (run_id, metric))}
            done = _current(db, run_id, metric, digests)
            mine = [o for o in queue if holds.get(o) == reviewer and o not in done]
            pick = mine[0] if mine else next((o for o in queue if o not in done and o not in holds), None)
            if pick is not None and not mine:
                db.execute("INSERT INTO label_holds VALUES (?,?,?,?,?,?,?)", (run_id, metric, *pick, reviewer,
                                                                             time.time()))
            db.execute("COMMIT")
        return pick

    def save(self, label: Label) -> None:
        """Saves a label, only from the reviewer holding the answer (or relabelling their own label of it as it
        is now); the hold ends with it."""
        key = (label.run_id, label.metric, label.task, label.example_id, label.candidate)
        with self.store.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            held = db.execute("SELECT reviewer FROM label_holds WHERE run_id = ? AND metric = ? AND task = ? AND "
                              "example_id = ? AND candidate = ?", key).fetchone()
            own = db.execute("SELECT reviewer, answer_sha256 FROM labels WHERE run_id = ? AND metric = ? AND "
                             "task = ? AND example_id = ? AND candidate = ?", key).fetchone()
            if held != (label.reviewer,) and own != (label.reviewer, label.answer_sha256):
                db.execute("ROLLBACK")
                raise HarnessError(f"{label.task} {label.example_id}: no longer yours to label (left unlabelled "
                                   "too long, it went to another reviewer)")
            db.execute("INSERT OR REPLACE INTO labels VALUES (?,?,?,?,?,?,?,?,?)",
                       (*key[:2], label.task, label.example_id, label.candidate, label.reviewer, label.value,
                        label.answer_sha256, time.time()))
            db.execute("DELETE FROM label_holds WHERE run_id = ? AND metric = ? AND task = ? AND example_id = ? AND "
                       "candidate = ?", key)
            db.execute("COMMIT")


def _current(db: sqlite3.Connection, run_id: str, metric: str, digests: Mapping[Output, str]) -> set[Output]:
    """The answers with a label of the answer as it is now (`digests`: each answer's sha256)."""
    rows = db.execute("SELECT task, example_id, candidate, answer_sha256 FROM labels WHERE run_id = ? AND metric = ?",
                      (run_id, metric))
    return {Output(t, e, c) for t, e, c, sha in rows if digests.get(Output(t, e, c)) == sha}


def label_queue(seed: int, metric: str, task: str, example_ids: Iterable[str],
                candidates: Sequence[str]) -> list[Output]:
    """What labellers of a metric on a task go through: the examples in `label_order`, each candidate's answer
    to one example before the next example. The candidates come in an order of their own for each example (fixed by
    the seed), so that an answer's place in the queue does not say whose it is."""
    out = []
    for example_id in label_order(seed, metric, task, example_ids):
        cands = sorted(set(candidates))
        random.Random(f"{seed}\0{metric}\0{task}\0{example_id}").shuffle(cands)
        out += [Output(task, example_id, cand) for cand in cands]
    return out


def current_labels(labels: Iterable[Label], answers: Mapping[Output, str]) -> dict[Output, Label]:
    """The labels of the answers as they are now (`answers`: each answer's sha256)."""
    return {lab.output: lab for lab in labels if answers.get(lab.output) == lab.answer_sha256}


def run_labels(results: Path, run_id: str) -> list[Label]:
    """A run's labels, from the database beside the results (none where there is none)."""
    path = ResultsDir(results).ratings_db
    return LabelStore(RatingStore(path)).labels(run_id) if path.is_file() else []
