"""Scorecard: the manifest's verdicts, metrics with intervals, a forest plot of paired differences against
a baseline, and quality against latency and cost (is the fine-tune on the frontier?)."""

from __future__ import annotations

import math

import altair as alt
import pandas as pd
import streamlit as st

from dashboard.context import Context
from dashboard.data import RunView
from dashboard.widgets import failure
from harness.compare import compare_runs
from harness.errors import HarnessError
from harness.metrics import METRICS
from harness.report import CORRECTION_COLUMNS, correction_rows, cost_per_1k_requests, latency_trio, level

STATUS = {"pass": "PASS", "fail": "FAIL", "insufficient": "insufficient"}


def _cell(value: float, low: float | None, high: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if low is None or high is None or (isinstance(low, float) and math.isnan(low)):
        return f"{value:.4g}"
    return f"{value:.4g} [{low:.4g}, {high:.4g}]"


def verdicts(view: RunView) -> None:
    st.subheader("Manifest")
    if view.verdicts.empty:
        st.caption("This run has no manifest verdicts (`harness gate RUN --manifest FILE` writes them).")
        return
    table = view.verdicts.assign(status=view.verdicts.status.map(STATUS),
                                 observed=[_cell(o, lo, hi) for o, lo, hi in
                                           zip(view.verdicts.observed, view.verdicts.ci_low, view.verdicts.ci_high,
                                               strict=True)])
    st.dataframe(table[["status", "criterion", "observed", "n", "evidence"]], hide_index=True, width="stretch")


def metric_table(view: RunView, metric: str) -> pd.DataFrame:
    rows = view.metrics[view.metrics.metric == metric]
    return rows.assign(cell=[_cell(v, lo, hi) for v, lo, hi in zip(rows.value, rows.ci_low, rows.ci_high,
                                                                    strict=True)]
                       ).pivot(index="candidate", columns="task", values="cell").fillna("–")


def forest(view: RunView, metric: str, baseline: str) -> pd.DataFrame:
    """Paired differences (candidate minus baseline) on one metric, from comparisons.json in either order."""
    c = view.comparisons
    if c.empty:
        return pd.DataFrame()
    c = c[c.metric == metric]
    direct = c[c.baseline == baseline].assign(other=lambda d: d.candidate)
    flipped = c[c.candidate == baseline].assign(other=lambda d: d.baseline, delta=lambda d: -d.delta,
                                                ci_low=lambda d: -d.ci_high, ci_high=lambda d: -d.ci_low)
    return pd.concat([direct, flipped])[["task", "other", "delta", "ci_low", "ci_high", "p_value"]]


def frontier(points: pd.DataFrame, higher_is_better: bool) -> pd.Series:
    """True where no other candidate is at least as good and at least as fast, and strictly better in one."""
    on = []
    for _, p in points.iterrows():
        better = (points.quality >= p.quality) if higher_is_better else (points.quality <= p.quality)
        strictly = (points.quality != p.quality) | (points.latency_ms < p.latency_ms)
        on.append(not ((better & (points.latency_ms <= p.latency_ms) & strictly).any()))
    return pd.Series(on, index=points.index)


def changes_between(before: RunView, after: RunView) -> None:
    """The second picked run against the first: what moved beyond both intervals (harness compare)."""
    st.subheader(f"Changes from {before.run_id} to {after.run_id}")
    try:
        changes = compare_runs(before.path, after.path)
    except HarnessError as exc:
        failure("The two runs cannot be compared:", exc)
        return
    if not changes:
        st.caption("The two runs share no candidate, task and metric.")
        return
    st.dataframe(pd.DataFrame([{"task": c.task, "candidate": c.candidate, "metric": c.metric,
                                "before": _cell(c.before, *c.before_ci), "after": _cell(c.after, *c.after_ci),
                                "movement": c.movement} for c in changes]), hide_index=True, width="stretch")


def corrected_table(view: RunView) -> None:
    """Each machine-scored metric raw beside corrected by reviewers' labels, with the label count (as the last
    `harness gate` computed them)."""
    if not view.corrections:
        return
    if not any(c.labels for c in view.corrections):
        st.caption(f"{', '.join(sorted({c.metric for c in view.corrections}))}: the machine's figures. Reviewers' "
                   "labels correct them (Review page, \"Label answers for corrected metrics\"; then `harness gate`).")
        return
    st.subheader(f"Corrected by reviewers' labels ({level(view.corrections[0].confidence)} intervals)")
    st.caption("The machine's figure (a detector's rate, a judge's score) beside the same figure corrected by the "
               "labels reviewers gave a uniformly random sample of answers (prediction-powered inference). "
               "Label answers on the Review page, then `harness gate` the run to update.")
    st.dataframe(pd.DataFrame(correction_rows(view.corrections), columns=list(CORRECTION_COLUMNS)),
                 hide_index=True)


def render(ctx: Context) -> None:
    st.title("Scorecard")
    view = ctx.picked()
    if view is None:
        return
    st.caption(f"Run {view.run_id}, suite {view.record.suite_name}")
    verdicts(view)
    corrected = {f"{c.metric}_corrected" for c in view.corrections}  # their own table: not bootstrap intervals
    quality = [m for m in view.metrics.metric.unique()
               if not (m in METRICS and METRICS[m].automatic) and m not in corrected]
    st.subheader(f"Metrics ({level(view.record.bootstrap.confidence)} bootstrap intervals)")
    metric = st.selectbox("Metric", quality, key="score_metric")
    st.dataframe(metric_table(view, metric), width="stretch")

    corrected_table(view)

    if len(ctx.views) == 2:
        changes_between(ctx.views[1], view)

    st.subheader("Paired differences against a baseline")
    baseline = st.selectbox("Baseline", view.candidates, key="score_baseline")
    diffs = forest(view, metric, baseline)
    if diffs.empty:
        st.caption("No comparisons on this metric.")
    else:
        diffs = diffs.assign(label=diffs.other + " · " + diffs.task)
        base = alt.Chart(diffs).encode(y=alt.Y("label:N", title=None, axis=alt.Axis(labelLimit=400)))
        chart = (base.mark_rule().encode(x=alt.X("ci_low:Q", title=f"{metric}: candidate − {baseline}"),
                                         x2="ci_high:Q")
                 + base.mark_point(filled=True, size=80).encode(x="delta:Q", tooltip=list(diffs.columns))
                 + alt.Chart(pd.DataFrame({"x": [0]})).mark_rule(strokeDash=[4, 4]).encode(x="x:Q"))
        st.altair_chart(chart, width="stretch")

    st.subheader("Quality, latency and cost")
    task = st.selectbox("Task", view.tasks, key="score_task")
    m = view.metrics
    rows = []
    # Every candidate of the suite: one without this task's metrics is skipped below, so the page need not read
    # the predictions (candidates_of) to know who ran the task.
    for cand in view.candidates:
        own = m[(m.task == task) & (m.candidate == cand)]
        q, lat = own[own.metric == metric], own[own.metric == "e2e_ms_p50"]
        if q.empty or lat.empty:
            continue
        latency_ms = float(lat.value.iloc[0])
        cost = view.costs.get(cand, 0.0)
        per_1k = cost_per_1k_requests(view.record, cost, cand, task)
        mine = dict(zip(own.metric, own.value, strict=True))
        rows.append({"candidate": cand, "quality": float(q.value.iloc[0]), "latency_ms": latency_ms,
                     "cost_per_hour": cost, "higher": bool(q.higher_is_better.iloc[0]),
                     **{f"{kind.upper()} ms p50/p90/p99": latency_trio(mine, kind) for kind in ("ttft", "itl", "e2e")},
                     "cost per 1k requests": "–" if per_1k is None else f"{per_1k:.4f}"})
    if rows:
        points = pd.DataFrame(rows)
        points["on_frontier"] = frontier(points, bool(points.higher.iloc[0]))
        chart = alt.Chart(points).mark_circle(opacity=0.8).encode(
            x=alt.X("latency_ms:Q", title="end-to-end latency p50 (ms)"), y=alt.Y("quality:Q", title=metric),
            size=alt.Size("cost_per_hour:Q", title="cost per hour"), color="candidate:N",
            shape="on_frontier:N", tooltip=["candidate", "quality", "latency_ms", "cost_per_hour", "on_frontier"])
        st.altair_chart(chart, width="stretch")
        st.dataframe(points.drop(columns="higher"), hide_index=True)
    else:
        st.caption(f"{metric} is not a metric of {task}.")
