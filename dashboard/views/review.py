"""Review: a reviewer rates outputs 1–5 on factual accuracy, coherence and conciseness, or picks the better
of two outputs shown blind (random sides). Every mode is blind: the candidate's name shows only once the
rating is saved, and each reviewer meets the items in an order of their own. Where the run has a review plan,
the plan picks the items (planned_review.py); without one, the reviewer picks the task and mode, with progress
and skip; the reviewer's own unrated items come up (an answer rewritten since they rated it comes back), and
"Change one of your ratings" brings back one they rated; saving again changes only their own rating.
Where the run has a metric a reviewer can label (a detector's, a judge's), the reviewer may label answers for its
corrected metric instead (labelling.py). Who rates or labels: a reviewer account signed in by its link's token, or
(no accounts, bound to loopback) a typed name."""

from __future__ import annotations

from itertools import combinations

import pandas as pd
import streamlit as st

from dashboard.context import Context
from dashboard.data import RunView
from dashboard.labelling import labellable, labelling
from dashboard.planned_review import planned
from dashboard.review_forms import (
    earlier_choice,
    flipped,
    in_order,
    pair_form,
    preferred,
    revisit,
    score_form,
    show_output,
    show_pair,
)
from dashboard.sign_in import current, oidc_configured
from dashboard.widgets import example_context, example_labels, failure
from harness.assignments import Assignments
from harness.errors import HarnessError
from harness.ratings import (
    Output,
    Preference,
    RatingStore,
    Reviewer,
    Score,
    answer_sha256,
    is_loopback,
)
from harness.review_plan import BLIND_RUBRIC, SCORES_RUBRIC

LABEL = "Label answers for corrected metrics"
ACTIVITIES = ["Rate outputs", LABEL]


def _answer(view: RunView, task: str, example_id: str, candidate: str) -> str:
    return view.answers.get(Output(task, example_id, candidate), "")


def _position(todo: int) -> int:
    pos = st.session_state.get("rev_pos", 0)
    return pos % todo if todo else 0


def _skip() -> None:
    st.session_state["rev_pos"] = st.session_state.get("rev_pos", 0) + 1


def scores_mode(view: RunView, store: RatingStore, reviewer: str, task: str) -> None:
    # A failed request has no answer to rate (and any failure makes a rating criterion insufficient anyway).
    items = in_order(reviewer, view.run_id, [(ex, c) for ex in view.examples[task].example_id
                                             for c in view.candidates_of(task) if view.answered(Output(task, ex, c))])
    now = {i: answer_sha256(_answer(view, task, *i)) for i in items}
    # A rating counts while the answer it rated is unchanged: a rewritten answer comes back to the queue.
    mine = {(s.example_id, s.candidate): s for s in store.scores(view.run_id, task)
            if s.reviewer == reviewer and now.get((s.example_id, s.candidate)) == s.answer_sha256}
    if not items:
        st.info("No answer of this task to rate: every request failed.")
        return
    todo = [i for i in items if i not in mine]
    st.progress(len(mine) / len(items), text=f"{len(mine)} of {len(items)} outputs rated by you")
    labels = example_labels(view, task)
    item = revisit(list(mine), lambda i: labels.get(i[0], i[0]), "score_revisit")
    if item is None and not todo:
        st.success("You have rated every output of this task.")
        return
    example_id, candidate = item or todo[_position(len(todo))]
    example_context(view, task, example_id)
    show_output(_answer(view, task, example_id, candidate))
    saved = score_form((example_id, candidate), mine.get((example_id, candidate)))
    st.button("Skip", on_click=_skip, key="score_skip")
    if saved is not None:
        values, comment = saved
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
                     [(ex, a, b) for ex in view.examples[task].example_id for a, b in combinations(cands, 2)
                      if view.answered(Output(task, ex, a)) and view.answered(Output(task, ex, b))])
    now = {(ex, c): answer_sha256(_answer(view, task, ex, c)) for ex in view.examples[task].example_id
           for c in cands}
    mine = {(p.example_id, p.candidate_a, p.candidate_b): p for p in store.preferences(view.run_id, task)
            if p.reviewer == reviewer and now.get((p.example_id, p.candidate_a)) == p.answer_a_sha256
            and now.get((p.example_id, p.candidate_b)) == p.answer_b_sha256}
    if not items:
        st.info("No example of this task where two candidates both answered.")
        return
    todo = [i for i in items if i not in mine]
    st.progress(len(mine) / len(items), text=f"{len(mine)} of {len(items)} comparisons done by you")
    labels = example_labels(view, task)
    item = revisit(list(mine), lambda i: labels.get(i[0], i[0]), "blind_revisit")
    if item is None and not todo:
        st.success("You have compared every pair of outputs of this task.")
        return
    example_id, a, b = item or todo[_position(len(todo))]
    left, right = (b, a) if flipped(reviewer, example_id, a, b) else (a, b)
    before = mine.get((example_id, a, b))
    example_context(view, task, example_id)
    show_pair(_answer(view, task, example_id, left), _answer(view, task, example_id, right))
    saved = pair_form((example_id, a, b), earlier_choice(before, left, right), before.comment if before else "")
    st.button("Skip", on_click=_skip, key="blind_skip")
    if saved is not None:
        choice, comment = saved
        store.save_preference(Preference(view.run_id, task, example_id, a, b, reviewer,
                                         preferred(choice, left, right, a), comment,
                                         now[(example_id, a)], now[(example_id, b)]))
        st.session_state["rev_message"] = f"On {example_id}, Output 1 was {left} and Output 2 was {right}."
        st.session_state["blind_revisit_done"] = True
        st.rerun()


def signed_in(store: RatingStore) -> Reviewer | None:
    """Who rates: where the results have reviewer accounts, the signed-in account (sign_in.py: the identity
    provider's, or the sign-in link's; never a typed name); without accounts, a typed name, and only on a
    dashboard bound to loopback. None: nobody may rate here, and the page says why."""
    if store.reviewers():
        found = current(store)
        if found.reviewer is None:
            found.explain()
            if oidc_configured() and not st.user.is_logged_in:
                st.button("Sign in", on_click=st.login)
        else:
            st.text(f"Signed in as {found.reviewer.name} ({found.reviewer.role})")  # data: never Markdown
        return found.reviewer
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
        if "rev_message" in st.session_state:
            st.success("Saved.")
            st.text(st.session_state.pop("rev_message"))  # names and ids are data: never rendered as Markdown
        if labellable(view) and st.radio("Activity", ACTIVITIES, horizontal=True, key="rev_activity") == LABEL:
            labelling(view, store, reviewer)
            return
        plan = Assignments(store).plan(view.run_id)
        if plan is not None:
            planned(view, store, reviewer, plan)
            return
        task = st.selectbox("Task", view.tasks, key="rev_task")
        mode = st.radio("Mode", ["Scores", "Blind side by side"], horizontal=True, key="rev_mode")
        with st.expander("Rubric"):
            st.text(SCORES_RUBRIC if mode == "Scores" else BLIND_RUBRIC)
        (scores_mode if mode == "Scores" else blind_mode)(view, store, reviewer.name, task)
        if reviewer.admin:
            everyone(view, store, task)
    except HarnessError as exc:
        failure("The rating cannot be saved or read:", exc)
