"""Review: a reviewer rates outputs 1–5 on factual accuracy, coherence and conciseness, or picks the better
of two outputs shown blind (random sides, candidate names hidden until the rating is saved). Progress and
skip; only the reviewer's own unrated items come up, and saving again changes only their own rating."""

from __future__ import annotations

import hashlib
from itertools import combinations

import streamlit as st

from dashboard.context import Context
from dashboard.data import RunView
from dashboard.widgets import example_context
from harness.errors import HarnessError
from harness.ratings import DIMENSIONS, Preference, RatingStore, Score

LABELS = {"accuracy": "Factual accuracy", "coherence": "Coherence", "conciseness": "Conciseness"}


def flipped(reviewer: str, example_id: str, a: str, b: str) -> bool:
    """Whether candidate b is shown on the left: a fixed coin per reviewer and item, so a rerun keeps sides."""
    digest = hashlib.sha256(f"{reviewer}\0{example_id}\0{a}\0{b}".encode()).digest()
    return digest[0] % 2 == 1


def _output(view: RunView, task: str, example_id: str, candidate: str) -> str:
    p = view.predictions
    rows = p[(p.task == task) & (p.example_id == example_id) & (p.candidate == candidate)]
    return "" if rows.empty else str(rows.iloc[-1].text)


def _position(todo: int) -> int:
    pos = st.session_state.get("rev_pos", 0)
    return pos % todo if todo else 0


def _skip() -> None:
    st.session_state["rev_pos"] = st.session_state.get("rev_pos", 0) + 1


def scores_mode(view: RunView, store: RatingStore, reviewer: str, task: str) -> None:
    items = [(ex, c) for ex in view.examples[task].example_id for c in view.candidates_of(task)]
    mine = {(s.example_id, s.candidate): s for s in store.scores(view.run_id, task) if s.reviewer == reviewer}
    todo = [i for i in items if i not in mine]
    st.progress(len(mine) / len(items), text=f"{len(mine)} of {len(items)} outputs rated by you")
    if not todo:
        st.success("You have rated every output of this task.")
        return
    example_id, candidate = todo[_position(len(todo))]
    example_context(view, task, example_id)
    st.markdown(f"**output of {candidate}**")
    st.text(_output(view, task, example_id, candidate))
    with st.form("score_form", clear_on_submit=True):
        values = {d: st.slider(LABELS[d], 1, 5, 3, key=f"rate_{d}") for d in DIMENSIONS}
        comment = st.text_area("Comment", key="rate_comment")
        saved = st.form_submit_button("Save rating")
    st.button("Skip", on_click=_skip, key="score_skip")
    if saved:
        store.save_score(Score(view.run_id, task, example_id, candidate, reviewer, comment=comment, **values))
        st.session_state["rev_message"] = f"Saved your rating of {candidate} on {example_id}."
        st.rerun()


def blind_mode(view: RunView, store: RatingStore, reviewer: str, task: str) -> None:
    cands = sorted(view.candidates_of(task))
    if len(cands) < 2:
        st.info("Blind comparison needs two candidates on this task.")
        return
    items = [(ex, a, b) for ex in view.examples[task].example_id for a, b in combinations(cands, 2)]
    mine = {(p.example_id, p.candidate_a, p.candidate_b) for p in store.preferences(view.run_id, task)
            if p.reviewer == reviewer}
    todo = [i for i in items if i not in mine]
    st.progress(len(mine) / len(items), text=f"{len(mine)} of {len(items)} comparisons done by you")
    if not todo:
        st.success("You have compared every pair of outputs of this task.")
        return
    example_id, a, b = todo[_position(len(todo))]
    left, right = (b, a) if flipped(reviewer, example_id, a, b) else (a, b)
    example_context(view, task, example_id)
    for col, name, side in zip(st.columns(2), (left, right), ("Output 1", "Output 2"), strict=True):
        with col:
            st.markdown(f"**{side}**")
            st.text(_output(view, task, example_id, name))
    with st.form("blind_form", clear_on_submit=True):
        choice = st.radio("Which output is better?", ["Output 1", "Output 2", "Tie"], horizontal=True,
                          key="blind_choice")
        comment = st.text_area("Comment", key="blind_comment")
        saved = st.form_submit_button("Save preference")
    st.button("Skip", on_click=_skip, key="blind_skip")
    if saved:
        winner = {"Output 1": left, "Output 2": right}.get(choice)
        preferred = "tie" if winner is None else ("A" if winner == a else "B")
        store.save_preference(Preference(view.run_id, task, example_id, a, b, reviewer, preferred, comment))
        st.session_state["rev_message"] = (f"Saved. On {example_id}, Output 1 was {left} and Output 2 was "
                                           f"{right}.")
        st.rerun()


def render(ctx: Context) -> None:
    st.title("Review")
    view = ctx.picked()
    if view is None:
        return
    reviewer = st.text_input("Your name", key="reviewer").strip()
    if not reviewer:
        st.info("Enter your name to start rating.")
        return
    task = st.selectbox("Task", view.tasks, key="rev_task")
    mode = st.radio("Mode", ["Scores", "Blind side by side"], horizontal=True, key="rev_mode")
    if "rev_message" in st.session_state:
        st.success(st.session_state.pop("rev_message"))
    try:
        store = RatingStore.beside(ctx.results)
        (scores_mode if mode == "Scores" else blind_mode)(view, store, reviewer, task)
    except HarnessError as exc:
        st.error(str(exc))
