"""Review: a reviewer rates outputs 1–5 on factual accuracy, coherence and conciseness, or picks the better
of two outputs shown blind (random sides). Every mode is blind: the candidate's name shows only once the
rating is saved, and each reviewer meets the items in an order of their own. Progress and
skip; the reviewer's own unrated items come up (an answer rewritten since they rated it comes back), and
"Change one of your ratings" brings back one they rated; saving again changes only their own rating.
Who rates: a reviewer account signed in by its link's token, or (no accounts, bound to loopback) a typed name."""

from __future__ import annotations

import hashlib
from itertools import combinations
from typing import TypeVar

import pandas as pd
import streamlit as st

from dashboard.context import Context
from dashboard.data import RunView
from dashboard.widgets import example_context, example_labels, failure
from harness.errors import HarnessError
from harness.ratings import (
    DIMENSIONS,
    Output,
    Preference,
    RatingStore,
    Reviewer,
    Score,
    answer_sha256,
    is_loopback,
)

T = TypeVar("T", bound=tuple[str, ...])
LABELS = {"accuracy": "Factual accuracy", "coherence": "Coherence", "conciseness": "Conciseness"}


def flipped(reviewer: str, example_id: str, a: str, b: str) -> bool:
    """Whether candidate b is shown on the left: a fixed coin per reviewer and item, so a rerun keeps sides."""
    digest = hashlib.sha256(f"{reviewer}\0{example_id}\0{a}\0{b}".encode()).digest()
    return digest[0] % 2 == 1


def in_order(reviewer: str, run_id: str, items: list[T]) -> list[T]:
    """The items in the reviewer's own order: shuffled by a hash of reviewer, run and item, so a rerun keeps
    it and two reviewers meet the items in different orders."""
    return sorted(items, key=lambda i: hashlib.sha256("\0".join((reviewer, run_id, *i)).encode()).digest())


def _answer(view: RunView, task: str, example_id: str, candidate: str) -> str:
    return view.answers.get(Output(task, example_id, candidate), "")


def _position(todo: int) -> int:
    pos = st.session_state.get("rev_pos", 0)
    return pos % todo if todo else 0


def _skip() -> None:
    st.session_state["rev_pos"] = st.session_state.get("rev_pos", 0) + 1


def _revisit(view: RunView, task: str, rated: list[T], key: str) -> T | None:
    """A rating of the reviewer's own to change, picked by the example (never the candidate: the pick stays
    blind); None for the next item of the queue."""
    if st.session_state.pop(f"{key}_done", False):
        st.session_state[key] = None  # back to the queue once a changed rating is saved
    labels = example_labels(view, task)
    return st.selectbox("Change one of your ratings", [None, *rated], key=key,
                        format_func=lambda i: "– next in the queue –" if i is None else
                        f"{rated.index(i) + 1}. {labels.get(i[0], i[0])}")


def _prefill(item: tuple[str, ...], values: dict[str, object]) -> None:
    """The form's widgets set to an item's earlier rating (or the defaults) when the item shown changes."""
    if st.session_state.get("rev_item") != item or any(k not in st.session_state for k in values):
        st.session_state.update(values)
        st.session_state["rev_item"] = item


def scores_mode(view: RunView, store: RatingStore, reviewer: str, task: str) -> None:
    items = in_order(reviewer, view.run_id,
                     [(ex, c) for ex in view.examples[task].example_id for c in view.candidates_of(task)])
    now = {i: answer_sha256(_answer(view, task, *i)) for i in items}
    # A rating counts while the answer it rated is unchanged: a rewritten answer comes back to the queue.
    mine = {(s.example_id, s.candidate): s for s in store.scores(view.run_id, task)
            if s.reviewer == reviewer and now.get((s.example_id, s.candidate)) == s.answer_sha256}
    todo = [i for i in items if i not in mine]
    st.progress(len(mine) / len(items), text=f"{len(mine)} of {len(items)} outputs rated by you")
    item = _revisit(view, task, list(mine), "score_revisit")
    if item is None and not todo:
        st.success("You have rated every output of this task.")
        return
    example_id, candidate = item or todo[_position(len(todo))]
    before = mine.get((example_id, candidate))
    earlier: dict[str, object] = {f"rate_{d}": getattr(before, d) if before else 3 for d in DIMENSIONS}
    earlier["rate_comment"] = before.comment if before else ""
    _prefill(("score", example_id, candidate), earlier)
    example_context(view, task, example_id)
    st.markdown("**Output** (whose, you see once your rating is saved)")
    st.text(_answer(view, task, example_id, candidate))
    with st.form("score_form"):
        values = {d: st.slider(LABELS[d], 1, 5, key=f"rate_{d}") for d in DIMENSIONS}
        comment = st.text_area("Comment", key="rate_comment")
        saved = st.form_submit_button("Save rating")
    st.button("Skip", on_click=_skip, key="score_skip")
    if saved:
        store.save_score(Score(view.run_id, task, example_id, candidate, reviewer, comment=comment,
                               answer_sha256=now[(example_id, candidate)], **values))
        st.session_state["rev_message"] = f"That was the output of {candidate} (example {example_id})."
        st.session_state["score_revisit_done"] = True
        st.rerun()


def blind_mode(view: RunView, store: RatingStore, reviewer: str, task: str) -> None:
    cands = sorted(view.candidates_of(task))
    if len(cands) < 2:
        st.info("Blind comparison needs two candidates on this task.")
        return
    items = in_order(reviewer, view.run_id,
                     [(ex, a, b) for ex in view.examples[task].example_id for a, b in combinations(cands, 2)])
    now = {(ex, c): answer_sha256(_answer(view, task, ex, c)) for ex in view.examples[task].example_id
           for c in cands}
    mine = {(p.example_id, p.candidate_a, p.candidate_b): p for p in store.preferences(view.run_id, task)
            if p.reviewer == reviewer and now.get((p.example_id, p.candidate_a)) == p.answer_a_sha256
            and now.get((p.example_id, p.candidate_b)) == p.answer_b_sha256}
    todo = [i for i in items if i not in mine]
    st.progress(len(mine) / len(items), text=f"{len(mine)} of {len(items)} comparisons done by you")
    item = _revisit(view, task, list(mine), "blind_revisit")
    if item is None and not todo:
        st.success("You have compared every pair of outputs of this task.")
        return
    example_id, a, b = item or todo[_position(len(todo))]
    left, right = (b, a) if flipped(reviewer, example_id, a, b) else (a, b)
    before = mine.get((example_id, a, b))
    side_of = {left: "Output 1", right: "Output 2"}
    chosen = "Output 1" if before is None else ("Tie" if before.preferred == "tie" else
                                                side_of[a if before.preferred == "A" else b])
    _prefill(("blind", example_id, a, b), {"blind_choice": chosen, "blind_comment": before.comment if before else ""})
    example_context(view, task, example_id)
    for col, name, side in zip(st.columns(2), (left, right), ("Output 1", "Output 2"), strict=True):
        with col:
            st.markdown(f"**{side}**")
            st.text(_answer(view, task, example_id, name))
    with st.form("blind_form"):
        choice = st.radio("Which output is better?", ["Output 1", "Output 2", "Tie"], horizontal=True,
                          index=None, key="blind_choice")
        comment = st.text_area("Comment", key="blind_comment")
        saved = st.form_submit_button("Save preference")
    st.button("Skip", on_click=_skip, key="blind_skip")
    if saved and choice is None:
        st.warning("Choose Output 1, Output 2 or Tie, then save.")
    elif saved and choice is not None:
        winner = {"Output 1": left, "Output 2": right}.get(choice)
        preferred = "tie" if winner is None else ("A" if winner == a else "B")
        store.save_preference(Preference(view.run_id, task, example_id, a, b, reviewer, preferred, comment,
                                         now[(example_id, a)], now[(example_id, b)]))
        st.session_state["rev_message"] = f"On {example_id}, Output 1 was {left} and Output 2 was {right}."
        st.session_state["blind_revisit_done"] = True
        st.rerun()


def signed_in(store: RatingStore) -> Reviewer | None:
    """Who rates: where the results have reviewer accounts, the account of the sign-in link's token (never a
    typed name); without accounts, a typed name, and only on a dashboard bound to loopback. None: nobody may
    rate here, and the page says why."""
    if store.reviewers():
        who = store.signed_in(st.query_params.get("token"))
        if who is None:
            st.warning("Sign in with your personal link to rate: an admin prints it with `harness reviewers add "
                       "NAME`.")
        else:
            st.text(f"Signed in as {who.name} ({who.role})")  # a name is data: never rendered as Markdown
        return who
    if not is_loopback(st.get_option("server.address")):
        st.warning("This dashboard is reachable beyond this machine and has no reviewer accounts: add them with "
                   "`harness reviewers add NAME`, and sign in with the link it prints.")
        return None
    name = st.text_input("Your name", key="reviewer").strip()
    if not name:
        st.info("Enter your name to start rating.")
    return Reviewer(name) if name else None


def everyone(view: RunView, store: RatingStore, task: str) -> None:
    """An admin's view: every reviewer's progress on the task (ratings of the answers as they are now)."""
    rated = store.of_run(view.run_id).of_answers(view.answers)
    names = sorted({r.name for r in store.reviewers()} | {s.reviewer for s in rated.scores}
                   | {p.reviewer for p in rated.preferences})
    st.subheader("Everyone's progress on this task")
    st.dataframe(pd.DataFrame([{"reviewer": n, "outputs rated": sum(s.reviewer == n for s in rated.scores
                                                                    if s.task == task),
                                "comparisons done": sum(p.reviewer == n for p in rated.preferences
                                                        if p.task == task)} for n in names]), hide_index=True)


def render(ctx: Context) -> None:
    st.title("Review")
    view = ctx.picked()
    if view is None:
        return
    try:
        store = RatingStore.beside(ctx.results)
        reviewer = signed_in(store)
        if reviewer is None:
            return
        task = st.selectbox("Task", view.tasks, key="rev_task")
        mode = st.radio("Mode", ["Scores", "Blind side by side"], horizontal=True, key="rev_mode")
        if "rev_message" in st.session_state:
            st.success("Saved.")
            st.text(st.session_state.pop("rev_message"))  # names and ids are data: never rendered as Markdown
        (scores_mode if mode == "Scores" else blind_mode)(view, store, reviewer.name, task)
        if reviewer.admin:
            everyone(view, store, task)
    except HarnessError as exc:
        failure("The rating cannot be saved or read:", exc)
