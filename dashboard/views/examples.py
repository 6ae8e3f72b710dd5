"""Examples: several candidates' outputs side by side for one example, with its input and reference;
filters (A right and B wrong, hallucinated, invalid label, by label, by metric range) and, for
classification, a confusion matrix whose cells lead to their examples."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from dashboard.context import Context
from dashboard.data import RunView
from dashboard.widgets import example_context, example_labels, failure, metric_columns, scores_table
from harness.errors import HarnessError

FILTERS = ("all", "A right and B wrong", "hallucinated", "invalid label", "by label", "by metric range",
           "confusion cell")


def per_example(view: RunView, task: str) -> pd.DataFrame:
    """scores.jsonl rows of the task: one per (example, candidate), metric columns where they exist."""
    s = view.scores
    return s[s.task == task] if not s.empty else s


def confusion(view: RunView, task: str, candidate: str) -> pd.DataFrame:
    rows = per_example(view, task)
    rows = rows[rows.candidate == candidate].merge(view.examples[task][["example_id", "reference"]], on="example_id")
    predicted = rows.predicted_label.astype(object).where(rows.predicted_label.notna(), "(invalid)")
    return pd.crosstab(rows.reference, predicted)


def matching(view: RunView, task: str, how: str) -> list[str]:
    """The example ids a filter keeps (its settings are read from the widgets it draws)."""
    rows = per_example(view, task)
    ids = list(view.examples[task].example_id)
    cands = view.candidates_of(task)
    metric_cols = metric_columns(rows)
    if how == "A right and B wrong":
        a = st.selectbox("A", cands, key="ex_a")
        b = st.selectbox("B", cands, index=min(1, len(cands) - 1), key="ex_b")
        binary = [c for c in metric_cols if set(rows[c].dropna().unique()) <= {0.0, 1.0}
                  and c not in ("invalid_label_rate",)]
        if not binary:
            st.caption("This task has no right/wrong metric.")
            return []
        metric = st.selectbox("Right means", binary, key="ex_binary")
        right = rows.pivot(index="example_id", columns="candidate", values=metric)
        return [i for i in ids if i in right.index and right.at[i, a] == 1 and right.at[i, b] == 0]
    if how == "hallucinated":
        d = view.detections
        cand = st.selectbox("Candidate", cands, key="ex_hcand")
        if d.empty or task not in set(d.task):
            st.caption("No hallucination findings for this task.")
            return []
        hit = set(d[(d.task == task) & (d.candidate == cand) & d.hallucinated].example_id)
        return [i for i in ids if i in hit]
    if how == "invalid label":
        cand = st.selectbox("Candidate", cands, key="ex_icand")
        if "invalid_label_rate" not in rows:
            st.caption("Not a classification task.")
            return []
        bad = set(rows[(rows.candidate == cand) & (rows.invalid_label_rate == 1)].example_id)
        return [i for i in ids if i in bad]
    if how == "by label":
        labels = sorted(set(view.examples[task].reference))
        label = st.selectbox("Reference label", labels, key="ex_label")
        return list(view.examples[task][view.examples[task].reference == label].example_id)
    if how == "by metric range":
        cand = st.selectbox("Candidate", cands, key="ex_rcand")
        metric = st.selectbox("Metric", metric_cols, key="ex_rmetric")
        values = rows[rows.candidate == cand].set_index("example_id")[metric].dropna()
        if values.empty:
            return []
        low, high = float(values.min()), float(values.max())
        if low == high:
            return list(values.index)
        chosen = st.slider("Range", low, high, (low, high), key="ex_range")
        return [i for i in ids if i in values.index and chosen[0] <= values[i] <= chosen[1]]
    if how == "confusion cell":
        cand = st.selectbox("Candidate", cands, key="ex_ccand")
        table = confusion(view, task, cand)
        truth = st.selectbox("True label", list(table.index), key="ex_true")
        pred = st.selectbox("Predicted", list(table.columns), key="ex_pred")
        rows = rows[rows.candidate == cand].merge(view.examples[task][["example_id", "reference"]], on="example_id")
        predicted = rows.predicted_label.astype(object).where(rows.predicted_label.notna(), "(invalid)")
        return list(rows[(rows.reference == truth) & (predicted == pred)].example_id)
    return ids


def side_by_side(view: RunView, task: str, example_id: str) -> None:
    example_context(view, task, example_id)
    cands = view.candidates_of(task)
    try:
        preds = view.predictions_of(task, example_id)
    except HarnessError as exc:
        failure("This example's answers cannot be read:", exc)
        return
    rows = per_example(view, task)
    found = view.detections
    for col, cand in zip(st.columns(len(cands)), cands, strict=True):
        with col:
            st.subheader(cand, divider="gray")
            mine = preds[preds.candidate == cand]
            if mine.empty:
                st.caption("no prediction")
                continue
            # The answer the gate scores and reviewers rate (RunDir.answers): the first success, else the last failure.
            succeeded = mine[mine.error.isna()] if "error" in mine else mine
            shown = succeeded.iloc[0] if not succeeded.empty else mine.iloc[-1]
            if isinstance(shown.get("error"), str):
                failure("The request failed:", shown["error"])
            st.text(shown["text"])
            scored = rows[(rows.candidate == cand) & (rows.example_id == example_id)]
            if not scored.empty:
                st.dataframe(scores_table(scored.iloc[0]), hide_index=True)
            if not found.empty:
                hit = found[(found.task == task) & (found.candidate == cand) & (found.example_id == example_id)]
                if not hit.empty and bool(hit.iloc[0].hallucinated):
                    st.warning("hallucinated: the source does not support")
                    st.code("\n".join(map(str, hit.iloc[0].spans)), language=None)


LINK = ("task", "candidate", "reference", "predicted")


def open_link() -> None:
    """A link from another page (the Slices page's confusion pairs: ?page=Examples&task=…&candidate=…&reference=…
    &predicted=…) opens that confusion cell, once; the widgets are the user's again afterwards."""
    q = st.query_params
    if all(k in q for k in LINK) and not st.session_state.get("ex_linked"):
        st.session_state.update(ex_task=q["task"], ex_filter="confusion cell", ex_ccand=q["candidate"],
                                ex_true=q["reference"], ex_pred=q["predicted"], ex_linked=True)


def render(ctx: Context) -> None:
    st.title("Examples")
    view = ctx.picked()
    if view is None:
        return
    open_link()
    task = st.selectbox("Task", view.tasks, key="ex_task")
    how = st.selectbox("Show", FILTERS, key="ex_filter")
    ids = matching(view, task, how)
    st.caption(f"{len(ids)} of {len(view.examples[task])} examples")
    if ids:
        labels = example_labels(view, task)
        example_id = st.selectbox("Example", ids, key="ex_id", format_func=lambda i: labels.get(i, i))
        side_by_side(view, task, example_id)
    if view.labels.get(task):
        st.subheader("Confusion matrix")
        cand = st.selectbox("Candidate", view.candidates_of(task), key="ex_cm_cand")
        table = confusion(view, task, cand)
        cells = table.reset_index().melt(id_vars="reference", var_name="predicted", value_name="count")
        chart = alt.Chart(cells[cells["count"] > 0]).mark_rect().encode(
            x=alt.X("predicted:N", sort=None), y=alt.Y("reference:N", sort=None), color="count:Q",
            tooltip=["reference", "predicted", "count"])
        st.altair_chart(chart, width="stretch")
        st.caption("Choose “confusion cell” under Show to list the examples of a cell.")
