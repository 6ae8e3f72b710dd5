"""The ratings database: validation, one row per reviewer and item (a reviewer replaces only their own),
blind-pair normalisation, and 20 concurrent writers saving 50 ratings each with none lost."""

import multiprocessing
import sqlite3

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.ratings import (
    HumanRatings,
    Output,
    Preference,
    RatingStore,
    Score,
    answer_sha256,
    item_means,
    item_wins,
)


def test_each_reviewer_owns_their_rating(tmp_path):
    store = RatingStore(tmp_path / "r.sqlite")
    store.save_score(Score("run", "qa", "e1", "ft", "ada", 5, 5, 5))
    store.save_score(Score("run", "qa", "e1", "ft", "bob", 1, 2, 3))
    store.save_score(Score("run", "qa", "e1", "ft", "ada", 4, 4, 4, "changed my mind"))
    rows = {(s.reviewer, s.accuracy, s.comment) for s in store.scores("run")}
    assert rows == {("ada", 4, "changed my mind"), ("bob", 1, "")}
    with sqlite3.connect(tmp_path / "r.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_bad_ratings_are_refused(tmp_path):
    store = RatingStore(tmp_path / "r.sqlite")
    with pytest.raises(HarnessError, match="accuracy must be 1 to 5"):
        store.save_score(Score("run", "qa", "e1", "ft", "ada", 6, 3, 3))
    with pytest.raises(HarnessError, match="reviewer's name"):
        store.save_score(Score("run", "qa", "e1", "ft", "  ", 3, 3, 3))
    with pytest.raises(HarnessError, match="preferred must be one of"):
        store.save_preference(Preference("run", "qa", "e1", "a", "b", "ada", "left"))


def test_a_pair_is_stored_once_whatever_the_order_shown(tmp_path):
    store = RatingStore(tmp_path / "r.sqlite")
    store.save_preference(Preference("run", "qa", "e1", "zeta", "alpha", "ada", "A"))  # zeta preferred
    store.save_preference(Preference("run", "qa", "e1", "alpha", "zeta", "ada", "B"))  # the same judgement again
    (p,) = store.preferences("run")
    assert (p.candidate_a, p.candidate_b, p.preferred) == ("alpha", "zeta", "B")
    assert p.outcome("zeta") == 1.0 and p.outcome("alpha") == 0.0 and p.outcome("other") is None


def test_a_rating_counts_only_for_the_answer_it_rated(tmp_path):
    store = RatingStore(tmp_path / "r.sqlite")
    old, new = answer_sha256("Paris"), answer_sha256("Lyon")
    store.save_score(Score("run", "qa", "e1", "ft", "ada", 5, 5, 5, answer_sha256=old))
    store.save_preference(Preference("run", "qa", "e1", "ft", "base", "ada", "A", answer_a_sha256=old,
                                     answer_b_sha256=answer_sha256("Rome")))
    (p,) = store.preferences("run")  # stored in sorted order: the hashes travel with their candidates
    assert (p.candidate_a, p.answer_a_sha256, p.preferred) == ("base", answer_sha256("Rome"), "B")
    rated = store.of_run("run")
    unchanged = {Output("qa", "e1", "ft"): "Paris", Output("qa", "e1", "base"): "Rome"}
    assert rated.of_answers(unchanged) == rated
    rewritten = rated.of_answers({**unchanged, Output("qa", "e1", "ft"): "Lyon"})
    assert rewritten == HumanRatings([], [])
    store.save_score(Score("run", "qa", "e1", "ft", "ada", 2, 2, 2, answer_sha256=new))  # rated again: replaces
    (s,) = store.of_run("run").of_answers({**unchanged, Output("qa", "e1", "ft"): "Lyon"}).scores
    assert s.accuracy == 2


def test_an_older_database_gains_the_answer_columns_and_its_ratings_stop_counting(tmp_path):
    path = tmp_path / "r.sqlite"
    with sqlite3.connect(path) as db:  # the schema before ratings recorded the answer
        db.execute("CREATE TABLE scores (run_id TEXT NOT NULL, task TEXT NOT NULL, example_id TEXT NOT NULL, "
                   "candidate TEXT NOT NULL, reviewer TEXT NOT NULL, accuracy INTEGER NOT NULL, coherence INTEGER "
                   "NOT NULL, conciseness INTEGER NOT NULL, comment TEXT NOT NULL DEFAULT '', rated_at REAL NOT "
                   "NULL, PRIMARY KEY (run_id, task, example_id, candidate, reviewer))")
        db.execute("INSERT INTO scores VALUES ('run', 'qa', 'e1', 'ft', 'ada', 4, 4, 4, 'old', 1.0)")
    store = RatingStore(path)
    (s,) = store.scores("run")
    assert (s.reviewer, s.accuracy, s.comment, s.answer_sha256) == ("ada", 4, "old", "")
    assert store.of_run("run").of_answers({Output("qa", "e1", "ft"): "Paris"}).scores == []
    store.save_score(Score("run", "qa", "e2", "ft", "ada", 3, 3, 3, answer_sha256=answer_sha256("x")))
    assert len(RatingStore(path).scores("run")) == 2


def test_item_aggregates_by_hand():
    scores = [Score("r", "t", "e1", "ft", "ada", 5, 4, 3), Score("r", "t", "e1", "ft", "bob", 3, 3, 3),
              Score("r", "t", "e2", "ft", "ada", 1, 1, 1), Score("r", "t", "e2", "base", "ada", 5, 5, 5)]
    assert sorted(item_means(scores, "ft")) == [1.0, 3.5]
    prefs = [Preference("r", "t", "e1", "base", "ft", "ada", "B"), Preference("r", "t", "e1", "base", "ft", "bob",
                                                                              "tie"),
             Preference("r", "t", "e2", "base", "ft", "ada", "A")]
    assert sorted(item_wins(prefs, "ft")) == [0.0, 0.75]


def _writer(path, worker, count):
    store = RatingStore(path)
    for i in range(count):
        store.save_score(Score("run", "qa", f"e{i}", "ft", f"reviewer-{worker}", 1 + i % 5, 3, 3))


def test_twenty_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "ratings.sqlite"
    RatingStore(path)
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_writer, args=(path, w, 50)) for w in range(20)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=300)
    assert all(p.exitcode == 0 for p in workers)
    scores = RatingStore(path).scores("run")
    assert len(scores) == 1000
    assert len({(s.reviewer, s.example_id) for s in scores}) == 1000
    assert np.mean([s.accuracy for s in scores]) == pytest.approx(3.0)
