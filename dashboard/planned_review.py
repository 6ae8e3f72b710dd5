"""The Review page on a run with a review plan (`harness reviewers plan`): the plan, not the reviewer, picks
the next item (harness.assignments hands it out, so each item gets exactly `overlap` reviewers), the rubric
stands beside it, gold items look like any other, and no save says whose output it was. The plan's tables
(every reviewer's progress, each item's, the gold records) are drawn here for the admin-only Agreement page."""

from __future__ import annotations

import streamlit as st

from dashboard.data import RunView
from dashboard.review_forms import (
    earlier_choice,
    flipped,
    pair_form,
    preferred,
    revisit,
    score_form,
    show_output,
    show_pair,
)
from dashboard.widgets import example_context, example_labels
from harness.assignments import Assignments
from harness.ratings import Output, Preference, RatingStore, Reviewer, Score, answer_sha256
from harness.review_plan import GoldItem, ReviewItem, ReviewPlan


def _own(view: RunView, store: RatingStore, reviewer: str, item: ReviewItem,
         digests: dict[Output, str]) -> Score | Preference | None:
    """The reviewer's current rating of a plan item (not a gold one), to prefill the form."""
    if len(item.candidates) == 1:
        return next((s for s in store.scores(view.run_id, item.task) if s.reviewer == reviewer
                     and (s.example_id, s.candidate) == (item.example_id, item.candidates[0])
                     and digests.get(Output(item.task, item.example_id, s.candidate)) == s.answer_sha256), None)
    a, b = item.candidates
    return next((p for p in store.preferences(view.run_id, item.task) if p.reviewer == reviewer
                 and (p.example_id, p.candidate_a, p.candidate_b) == (item.example_id, a, b)
                 and digests.get(Output(item.task, item.example_id, a)) == p.answer_a_sha256
                 and digests.get(Output(item.task, item.example_id, b)) == p.answer_b_sha256), None)


def _score(view: RunView, assignments: Assignments, plan: ReviewPlan, reviewer: str, item: ReviewItem,
           before: Score | None, digests: dict[Output, str]) -> str | None:
    gold = plan.gold[item.gold] if item.is_gold else None
    text = gold.answer if gold is not None else view.answers.get(Output(item.task, item.example_id,
                                                                        item.candidates[0]), "")
    show_output(text or "")
    saved = score_form((item.key,), before)
    if saved is None:
        return None
    values, comment = saved
    if gold is not None:
        assert gold.accuracy is not None
        assignments.save_gold(view.run_id, item, reviewer, f"accuracy {values['accuracy']}",
                              abs(values["accuracy"] - gold.accuracy) <= 1)
    else:
        (cand,) = item.candidates
        assignments.save_score(item, Score(view.run_id, item.task, item.example_id, cand, reviewer, comment=comment,
                                           answer_sha256=digests[Output(item.task, item.example_id, cand)],
                                           **values))
    return _saved(item)


def _pair(view: RunView, assignments: Assignments, plan: ReviewPlan, reviewer: str, item: ReviewItem,
          before: Preference | None, digests: dict[Output, str]) -> str | None:
    gold: GoldItem | None = plan.gold[item.gold] if item.is_gold else None
    a, b = ("better", "worse") if gold is not None else item.candidates
    texts = ({"better": gold.better or "", "worse": gold.worse or ""} if gold is not None else
             {c: view.answers.get(Output(item.task, item.example_id, c), "") for c in (a, b)})
    left, right = (b, a) if flipped(reviewer, item.example_id, a, b) else (a, b)
    show_pair(texts[left], texts[right])
    saved = pair_form((item.key,), earlier_choice(before, left, right), before.comment if before else "")
    if saved is None:
        return None
    choice, comment = saved
    if gold is not None:
        assignments.save_gold(view.run_id, item, reviewer, choice, preferred(choice, left, right, a) == "A")
    else:
        assignments.save_preference(item, Preference(view.run_id, item.task, item.example_id, a, b, reviewer,
                                                     preferred(choice, left, right, a), comment,
                                                     digests[Output(item.task, item.example_id, a)],
                                                     digests[Output(item.task, item.example_id, b)]))
    return _saved(item)


def _saved(item: ReviewItem) -> str:
    """What a save says in a plan: never whose output it was (with two candidates, naming one names the other
    output of the example, which may come next) nor whether the item was gold (a reviewer who knew would rate
    gold items with care)."""
    return f"Your rating of example {item.example_id} ({item.task}) is saved."


def _skip(assignments: Assignments, run_id: str, item: ReviewItem, reviewer: str) -> None:
    assignments.release(run_id, item, reviewer)
    st.session_state.setdefault("plan_skipped", set()).add(item.key)


def planned(view: RunView, store: RatingStore, reviewer: Reviewer, plan: ReviewPlan) -> None:
    assignments = Assignments(store)
    digests = {k: answer_sha256(v) for k, v in view.answers.items()}
    progress = assignments.progress(view.run_id, digests)
    assert progress is not None
    yours = progress.by_reviewer.get(reviewer.name, 0)
    st.progress(progress.complete / max(progress.planned, 1),
                text=f"Review plan: {progress.complete} of {progress.planned} items have their {plan.overlap} "
                     f"reviewers; {yours} rated by you")
    mine = assignments.rated_by(view.run_id, reviewer.name, digests)
    labels = {task: example_labels(view, task) for task in view.tasks}
    item = revisit(mine, lambda i: labels[i.task].get(i.example_id, i.example_id), "plan_revisit")
    if item is None:
        item = assignments.next_item(view.run_id, reviewer.name, digests, st.session_state.get("plan_skipped", ()))
    if item is None:
        st.success("Nothing is left for you in this review plan: thank you." if not st.session_state.get(
            "plan_skipped") else "Nothing is left for you but the items you skipped (reload the page to see them).")
    else:
        left, right = st.columns([3, 2])
        with right:
            st.caption("Rubric")
            st.text(plan.shown_rubric)  # the plan's author wrote it: shown as written, never as Markdown
        with left:
            st.text(f"Task: {item.task}")
            example_context(view, item.task, item.example_id)
            before = None if item.is_gold else _own(view, store, reviewer.name, item, digests)
            rate = _score if plan.mode == "scores" else _pair
            message = rate(view, assignments, plan, reviewer.name, item, before, digests)  # type: ignore[arg-type]
            if item not in mine:
                st.button("Skip", on_click=_skip, args=(assignments, view.run_id, item, reviewer.name),
                          key="plan_skip")
        if message is not None:
            st.session_state["rev_message"] = message
            st.session_state["plan_revisit_done"] = True
            st.rerun()
    if reviewer.admin:
        st.caption("Everyone's progress, each item's and the gold records: on the Agreement page (kept off this "
                   "page, where they would tell you which item you hold and which are gold).")
