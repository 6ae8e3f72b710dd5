"""The Review page's labelling mode: a reviewer labels single answers for a machine-scored metric (a detector's
rate, an LLM judge's score), asked the metric's own question, so that `<metric>_corrected` can correct the machine
with people's labels (prediction-powered inference). The harness picks each answer (harness.labels: a seeded
uniformly random order, one reviewer per answer) and offers no skip, which would bias the sample. The page never
says whose answer it is (the reviewer labels the answer, not the model) nor what the machine said of it (that
would anchor the label)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import streamlit as st

from dashboard.data import RunView
from dashboard.review_forms import for_this_item, prefill, submitted
from dashboard.widgets import example_context, failure
from harness.errors import HarnessError
from harness.labels import HOLD_MINUTES, Label, LabelStore, current_labels, label_order, label_queue, labelled_prefix
from harness.metrics import Labelling
from harness.ratings import Output, RatingStore, Reviewer, answer_sha256

CANNOT_TELL = "Cannot tell"


def labellable(view: RunView) -> list[tuple[str, str]]:
    """(metric, task) for each metric of the run a reviewer can label: a task's listed metrics (its own ones
    included) whose machine answers a question about one answer."""
    out = []
    for task in view.tasks:
        metrics = view.task_metrics.get(task)
        if metrics is not None:
            out += [(name, task) for name in metrics.listed
                    if name in metrics and metrics[name].labelling() is not None]
    return out


@dataclass(frozen=True)
class Queue:
    """One metric's labelling queue on one task, with the labels of its answers as they are now."""

    view: RunView
    metric: str
    task: str
    answers: list[Output]  # in the order they are labelled
    digests: dict[Output, str]  # each answer's sha256 now: a label of an older text no longer counts
    labelled: dict[Output, Label]

    def usable(self) -> dict[str, int]:
        """Per candidate, how many examples the correction may use: the labelled prefix of the seeded order."""
        order = label_order(self.view.suite.seed, self.metric, self.task, self.view.examples[self.task].example_id)
        # A failed request has no answer to label: the correction counts it at the worst, as if labelled so.
        done = [*self.labelled, *self.view.failed]
        return {cand: len(labelled_prefix(order, [o.example_id for o in done if o.candidate == cand
                                                  and o.task == self.task]))
                for cand in self.view.candidates_of(self.task)}


def _queue(view: RunView, labels: LabelStore, metric: str, task: str) -> Queue:
    answers = [o for o in label_queue(view.suite.seed, metric, task, view.examples[task].example_id,
                                      view.candidates_of(task)) if view.answered(o)]
    digests = {o: answer_sha256(view.answers[o]) for o in answers}
    now = current_labels(labels.labels(view.run_id, metric), digests)
    return Queue(view, metric, task, answers, digests, {o: now[o] for o in answers if o in now})


def _progress(queue: Queue, reviewer: Reviewer) -> None:
    """How far labelling has come, with no candidate's name (an admin's table has them)."""
    usable = queue.usable()
    low, high = min(usable.values(), default=0), max(usable.values(), default=0)
    sample = f"{low} examples for every candidate" if low == high else f"{low} to {high} examples per candidate"
    st.progress(len(queue.labelled) / max(len(queue.answers), 1),
                text=f"answers labelled: {len(queue.labelled)} of {len(queue.answers)}; usable sample: {sample}")
    if reviewer.admin:
        st.dataframe(pd.DataFrame([
            {"candidate": cand, "answers labelled": sum(o.candidate == cand for o in queue.labelled),
             "usable sample": n, "cannot tell": sum(o.candidate == cand and lab.value is None
                                                    for o, lab in queue.labelled.items())}
            for cand, n in usable.items()]), hide_index=True)


def _done(queue: Queue) -> None:
    if len(queue.labelled) == len(queue.answers):
        st.success("Every answer of this queue is labelled: thank you.")
    else:
        st.info(f"The answers left are held by other reviewers: come back later (an answer left unlabelled "
                f"{HOLD_MINUTES:.0f} minutes goes to the next reviewer).")


def _label_form(queue: Queue, labels: LabelStore, reviewer: Reviewer, answer: Output, asked: Labelling) -> None:
    """The answer shown and labelled. A save is of the answer on the page when the reviewer clicked (its text
    included): if the rerun would hand them another, nothing is saved."""
    item = (queue.metric, *answer, queue.digests[answer])
    prefill(("label", *item), {"label_choice": None})
    example_context(queue.view, answer.task, answer.example_id)
    st.markdown("**Answer**")
    st.text(queue.view.answers[answer])  # data: never Markdown
    with st.form("label_form"):
        st.text(asked.question)  # a rubric is the task author's text: shown as written
        choice = st.radio("Your label", [name for name, _ in asked.choices] + [CANNOT_TELL], index=None,
                          key="label_choice")
        saved = st.form_submit_button("Save label", on_click=submitted, args=(item,))
    if not saved or not for_this_item(item, "labelled"):
        return
    if choice is None:
        st.warning(f"Choose an answer (or {CANNOT_TELL}), then save.")
        return
    try:
        labels.save(Label(queue.view.run_id, queue.metric, answer.task, answer.example_id, answer.candidate,
                          reviewer.name, dict(asked.choices).get(choice), queue.digests[answer]))
    except HarnessError as exc:
        failure("Your label was not saved:", exc)
        return
    st.session_state["rev_message"] = f"Your label of example {answer.example_id} ({answer.task}) is saved."
    st.rerun()


def labelling(view: RunView, store: RatingStore, reviewer: Reviewer) -> None:
    """The labelling mode: pick a metric and task, then label the answer the harness hands out."""
    metric, task = st.selectbox("Metric and task", labellable(view), key="label_pick",
                                format_func=lambda pick: f"{pick[0]} on {pick[1]}")
    labels = LabelStore(store)
    queue = _queue(view, labels, metric, task)
    _progress(queue, reviewer)
    st.caption(f"The harness picks the answers, in a random order fixed for the run, and there is no skip: skipping "
               f"the hard ones would bias the sample. Where you cannot decide, choose {CANNOT_TELL}.")
    answer = labels.next_answer(view.run_id, metric, reviewer.name, queue.answers, queue.digests)
    if answer is None:
        _done(queue)
        return
    asked = view.task_metrics[task][metric].labelling()
    assert asked is not None  # labellable() offers no other metric
    _label_form(queue, labels, reviewer, answer, asked)
