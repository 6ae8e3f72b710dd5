"""Human ratings in SQLite (WAL mode, so reviewers save concurrently while the dashboard reads): 1–5 scores
on factual accuracy, coherence and conciseness, and blind side-by-side preferences. One row per rating and
reviewer; saving again replaces only that reviewer's own row. Each rating records the sha256 of the answer
text(s) it rated, and counts only while the answer is unchanged. The manifest metrics `human_rating` and
`human_win_rate` are computed from here. Reviewer accounts live here too: a name, a role, and the sha256 of
their sign-in token (the token itself is printed once and kept nowhere)."""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from harness.errors import HarnessError
from harness.store import ResultsDir

DIMENSIONS = ("accuracy", "coherence", "conciseness")
PREFERENCES = ("A", "B", "tie")
ROLES = ("reviewer", "admin")

_TABLES = (
    """CREATE TABLE IF NOT EXISTS scores (
    run_id TEXT NOT NULL, task TEXT NOT NULL, example_id TEXT NOT NULL, candidate TEXT NOT NULL,
    reviewer TEXT NOT NULL, accuracy INTEGER NOT NULL CHECK (accuracy BETWEEN 1 AND 5),
    coherence INTEGER NOT NULL CHECK (coherence BETWEEN 1 AND 5),
    conciseness INTEGER NOT NULL CHECK (conciseness BETWEEN 1 AND 5),
    comment TEXT NOT NULL DEFAULT '', rated_at REAL NOT NULL,
    PRIMARY KEY (run_id, task, example_id, candidate, reviewer))""",
    """CREATE TABLE IF NOT EXISTS preferences (
    run_id TEXT NOT NULL, task TEXT NOT NULL, example_id TEXT NOT NULL,
    candidate_a TEXT NOT NULL, candidate_b TEXT NOT NULL, reviewer TEXT NOT NULL,
    preferred TEXT NOT NULL CHECK (preferred IN ('A', 'B', 'tie')), comment TEXT NOT NULL DEFAULT '',
    rated_at REAL NOT NULL,
    PRIMARY KEY (run_id, task, example_id, candidate_a, candidate_b, reviewer))""",
    """CREATE TABLE IF NOT EXISTS reviewers (
    name TEXT PRIMARY KEY, role TEXT NOT NULL CHECK (role IN ('reviewer', 'admin')),
    token_sha256 TEXT NOT NULL UNIQUE, created_at REAL NOT NULL)""",
    # A review plan per run (assignments.py): its items, who holds which item now, and the gold items' ratings.
    """CREATE TABLE IF NOT EXISTS review_plans (run_id TEXT PRIMARY KEY, plan_json TEXT NOT NULL,
    created_at REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS review_items (run_id TEXT NOT NULL, key TEXT NOT NULL, task TEXT NOT NULL,
    example_id TEXT NOT NULL, candidates TEXT NOT NULL, gold INTEGER NOT NULL, PRIMARY KEY (run_id, key))""",
    """CREATE TABLE IF NOT EXISTS claims (run_id TEXT NOT NULL, key TEXT NOT NULL, reviewer TEXT NOT NULL,
    claimed_at REAL NOT NULL, PRIMARY KEY (run_id, key, reviewer))""",
    """CREATE TABLE IF NOT EXISTS gold_ratings (run_id TEXT NOT NULL, gold INTEGER NOT NULL, reviewer TEXT NOT NULL,
    given TEXT NOT NULL, is_right INTEGER NOT NULL, rated_at REAL NOT NULL, PRIMARY KEY (run_id, gold, reviewer))""",
)
# Columns added since the first schema: a database written before gains them on opening ('' in older rows).
_ADDED = (("scores", "answer_sha256"), ("preferences", "answer_a_sha256"), ("preferences", "answer_b_sha256"))


def answer_sha256(text: str) -> str:
    """What a rating records of the answer it rated."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_loopback(host: str | None) -> bool:
    """Whether a dashboard bound to `host` is reachable from this machine only (no address: every interface)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Reviewer:
    """A reviewer account (or, on a dashboard bound to loopback without accounts, a typed name)."""

    name: str
    role: str = "reviewer"
    ratings: int = 0  # scores and preferences saved under this name, over every run

    @property
    def admin(self) -> bool:
        return self.role == "admin"


class Output(NamedTuple):
    """One rated (or automatically scored) output: a candidate's answer to one example of a task."""

    task: str
    example_id: str
    candidate: str


@dataclass(frozen=True)
class Score:
    run_id: str
    task: str
    example_id: str
    candidate: str
    reviewer: str
    accuracy: int
    coherence: int
    conciseness: int
    comment: str = ""
    answer_sha256: str = ""  # of the answer rated; '' in a rating saved before ratings recorded it

    def rates(self, answers: Mapping[Output, str]) -> bool:
        """Whether this rating is of the answer as it is now (`answers`: each output's sha256)."""
        now = answers.get(Output(self.task, self.example_id, self.candidate))
        return bool(self.answer_sha256) and now == self.answer_sha256

    @property
    def mean(self) -> float:
        return (self.accuracy + self.coherence + self.conciseness) / 3


@dataclass(frozen=True)
class Preference:
    """A blind comparison: `candidate_a` and `candidate_b` in a fixed (sorted) order; `preferred` is A, B or
    tie in that order, whatever order the reviewer saw them in."""

    run_id: str
    task: str
    example_id: str
    candidate_a: str
    candidate_b: str
    reviewer: str
    preferred: str
    comment: str = ""
    answer_a_sha256: str = ""  # of the two answers compared, as for Score.answer_sha256
    answer_b_sha256: str = ""

    def rates(self, answers: Mapping[Output, str]) -> bool:
        """Whether both answers compared are as they are now (`answers`: each output's sha256)."""
        shown = ((self.candidate_a, self.answer_a_sha256), (self.candidate_b, self.answer_b_sha256))
        return all(sha and answers.get(Output(self.task, self.example_id, cand)) == sha for cand, sha in shown)

    def outcome(self, candidate: str) -> float | None:
        """1 for a win of `candidate`, 0.5 for a tie, 0 for a loss; None if it was not in the pair."""
        if candidate not in (self.candidate_a, self.candidate_b):
            return None
        if self.preferred == "tie":
            return 0.5
        winner = self.candidate_a if self.preferred == "A" else self.candidate_b
        return 1.0 if winner == candidate else 0.0


@dataclass(frozen=True)
class HumanRatings:
    """A run's reviewer ratings, for the human_rating and human_win_rate metrics."""

    scores: list[Score]
    preferences: list[Preference]
    left_out: dict[str, str] = field(default_factory=dict)  # reviewer -> why their ratings do not count

    def without(self, reviewers: Mapping[str, str]) -> HumanRatings:
        """These ratings less those of `reviewers` (name -> why), who are recorded as left out."""
        return HumanRatings([s for s in self.scores if s.reviewer not in reviewers],
                            [p for p in self.preferences if p.reviewer not in reviewers],
                            {**self.left_out, **reviewers})

    def of_answers(self, answers: Mapping[Output, str]) -> HumanRatings:
        """Only the ratings of the answers as they are now (`answers`: each output's text): a rating of an answer
        since rewritten (`--resume`), or one saved before ratings recorded what they rated, does not count."""
        digests = {key: answer_sha256(text) for key, text in answers.items()}
        return HumanRatings([s for s in self.scores if s.rates(digests)],
                            [p for p in self.preferences if p.rates(digests)], self.left_out)


def accounts(results: Path) -> list[Reviewer]:
    """The reviewer accounts of a results folder (none where it has no ratings database yet)."""
    path = ResultsDir(results).ratings_db
    return RatingStore(path).reviewers() if path.is_file() else []


def _token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _check_reviewer(reviewer: str) -> str:
    name = reviewer.strip()
    if not name:
        raise HarnessError("a rating needs the reviewer's name")
    return name


class RatingStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("BEGIN IMMEDIATE")  # one opener at a time creates and migrates
            for table in _TABLES:
                db.execute(table)
            for table, column in _ADDED:
                if column not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT NOT NULL DEFAULT ''")
            db.execute("COMMIT")

    @classmethod
    def beside(cls, results: Path) -> RatingStore:
        return cls(ResultsDir(results).ratings_db)

    def of_run(self, run_id: str) -> HumanRatings:
        return HumanRatings(self.scores(run_id), self.preferences(run_id))

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise HarnessError(f"{self.path}: cannot open the ratings database ({exc})") from None
        try:
            db.execute("PRAGMA busy_timeout=30000")
            yield db
        except sqlite3.DatabaseError as exc:
            raise HarnessError(f"{self.path}: {exc}") from None
        finally:
            db.close()

    def add_reviewer(self, name: str, role: str = "reviewer") -> str:
        """A new account; returns its sign-in token, of which only the sha256 is stored."""
        if role not in ROLES:
            raise HarnessError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        name, token = _check_reviewer(name), secrets.token_urlsafe(24)
        with self.connect() as db:
            try:
                db.execute("INSERT INTO reviewers VALUES (?,?,?,?)", (name, role, _token_sha256(token), time.time()))
            except sqlite3.IntegrityError:
                raise HarnessError(f"{self.path}: there is a reviewer named {name!r} already") from None
        return token

    def new_link(self, name: str) -> str:
        """A new sign-in token for an existing account (a lost or leaked link): the old one stops working."""
        token = secrets.token_urlsafe(24)
        with self.connect() as db:
            changed = db.execute("UPDATE reviewers SET token_sha256 = ? WHERE name = ?",
                                 (_token_sha256(token), name)).rowcount
        if not changed:
            raise HarnessError(f"{self.path}: no reviewer named {name!r} (see `harness reviewers list`)")
        return token

    def reviewers(self) -> list[Reviewer]:
        """Every account, by name, with how many ratings each has saved."""
        with self.connect() as db:
            rows = db.execute("SELECT r.name, r.role, (SELECT COUNT(*) FROM scores s WHERE s.reviewer = r.name) + "
                              "(SELECT COUNT(*) FROM preferences p WHERE p.reviewer = r.name) FROM reviewers r "
                              "ORDER BY r.name").fetchall()
        return [Reviewer(*row) for row in rows]

    def account(self, name: str) -> Reviewer | None:
        """The account of that name (an identity provider's sign-in names it by e-mail)."""
        with self.connect() as db:
            row = db.execute("SELECT name, role FROM reviewers WHERE name = ?", (name,)).fetchone()
        return None if row is None else Reviewer(*row)

    def signed_in(self, token: str | None) -> Reviewer | None:
        """The account a sign-in token belongs to; None for no token or one that is nobody's."""
        if not token:
            return None
        with self.connect() as db:
            row = db.execute("SELECT name, role FROM reviewers WHERE token_sha256 = ?",
                             (_token_sha256(token),)).fetchone()
        return None if row is None else Reviewer(*row)

    def save_score(self, s: Score) -> None:
        with self.connect() as db:
            write_score(db, s)

    def save_preference(self, p: Preference) -> None:
        with self.connect() as db:
            write_preference(db, p)

    def scores(self, run_id: str | None = None, task: str | None = None) -> list[Score]:
        query, args = _where("SELECT run_id, task, example_id, candidate, reviewer, accuracy, coherence, "
                             "conciseness, comment, answer_sha256 FROM scores", run_id, task)
        with self.connect() as db:
            return [Score(*row) for row in db.execute(query, args)]

    def preferences(self, run_id: str | None = None, task: str | None = None) -> list[Preference]:
        query, args = _where("SELECT run_id, task, example_id, candidate_a, candidate_b, reviewer, preferred, "
                             "comment, answer_a_sha256, answer_b_sha256 FROM preferences", run_id, task)
        with self.connect() as db:
            return [Preference(*row) for row in db.execute(query, args)]


def write_score(db: sqlite3.Connection, s: Score) -> None:
    """Saves a score (replacing the reviewer's own earlier one), inside the caller's transaction if any."""
    for dim in DIMENSIONS:
        if getattr(s, dim) not in range(1, 6):
            raise HarnessError(f"{dim} must be 1 to 5, not {getattr(s, dim)!r}")
    db.execute("INSERT OR REPLACE INTO scores (run_id, task, example_id, candidate, reviewer, accuracy, "
               "coherence, conciseness, comment, rated_at, answer_sha256) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
               (s.run_id, s.task, s.example_id, s.candidate, _check_reviewer(s.reviewer), s.accuracy,
                s.coherence, s.conciseness, s.comment, time.time(), s.answer_sha256))


def write_preference(db: sqlite3.Connection, p: Preference) -> None:
    """Saves a blind comparison as one row per unordered pair (replacing the reviewer's own earlier one)."""
    if p.preferred not in PREFERENCES:
        raise HarnessError(f"preferred must be one of {PREFERENCES}, not {p.preferred!r}")
    p = in_pair_order(p)
    db.execute("INSERT OR REPLACE INTO preferences (run_id, task, example_id, candidate_a, candidate_b, "
               "reviewer, preferred, comment, rated_at, answer_a_sha256, answer_b_sha256) "
               "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
               (p.run_id, p.task, p.example_id, p.candidate_a, p.candidate_b, _check_reviewer(p.reviewer),
                p.preferred, p.comment, time.time(), p.answer_a_sha256, p.answer_b_sha256))


def in_pair_order(p: Preference) -> Preference:
    """The same judgement with the candidates in sorted order, as it is stored."""
    if p.candidate_a <= p.candidate_b:
        return p
    return Preference(p.run_id, p.task, p.example_id, p.candidate_b, p.candidate_a, p.reviewer,
                      {"A": "B", "B": "A"}.get(p.preferred, p.preferred), p.comment, p.answer_b_sha256,
                      p.answer_a_sha256)


def _where(select: str, run_id: str | None, task: str | None) -> tuple[str, list[str]]:
    clauses, args = [], []
    for column, value in (("run_id", run_id), ("task", task)):
        if value is not None:
            clauses.append(f"{column} = ?")
            args.append(value)
    return select + (" WHERE " + " AND ".join(clauses) if clauses else "") + " ORDER BY rated_at", args


def item_means(scores: list[Score], candidate: str) -> np.ndarray:
    """Per rated example, the mean over reviewers of their mean 1–5 score, for one candidate."""
    per_item: dict[str, list[float]] = {}
    for s in scores:
        if s.candidate == candidate:
            per_item.setdefault(s.example_id, []).append(s.mean)
    return np.array([np.mean(v) for v in per_item.values()])


def paired_with_ratings(scores: list[Score], machine: Mapping[tuple[str, str, str], float]
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(machine values, reviewers' mean rating) per output that both scored, joined on (task, example,
    candidate) and in that order; `machine` maps an Output to its value, NaN where there is none. The gate's
    `<judge>_agreement` and the Agreement page both pair answers here, so they cannot pair them differently."""
    human: dict[Output, list[float]] = {}
    for s in scores:
        human.setdefault(Output(s.task, s.example_id, s.candidate), []).append(s.mean)
    keys = sorted(k for k in human if k in machine and not np.isnan(machine[k]))
    return (np.array([machine[k] for k in keys], float),
            np.array([np.mean(human[k]) for k in keys], float))


def item_wins(preferences: list[Preference], candidate: str) -> np.ndarray:
    """Per compared example, the candidate's mean outcome (win 1, tie 0.5, loss 0) over reviewers and rivals."""
    per_item: dict[str, list[float]] = {}
    for p in preferences:
        outcome = p.outcome(candidate)
        if outcome is not None:
            per_item.setdefault(p.example_id, []).append(outcome)
    return np.array([np.mean(v) for v in per_item.values()])
