"""Latency: TTFT, inter-token and end-to-end latency distributions per candidate, and `harness bench`
curves (latency against throughput over concurrency levels)."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from dashboard.context import Context
from dashboard.data import RunView, bench_runs


def samples(view: RunView, task: str | None) -> pd.DataFrame:
    """One row per measured value: candidate, kind (ttft / itl / e2e) and milliseconds."""
    p = view.predictions
    if task:
        p = p[p.task == task]
    rows = []
    for _, r in p.iterrows():
        if isinstance(r.get("error"), str):
            continue
        if pd.notna(r.get("ttft_s")):
            rows.append({"candidate": r.candidate, "kind": "TTFT", "ms": 1000 * r.ttft_s})
        if pd.notna(r.get("e2e_s")):
            rows.append({"candidate": r.candidate, "kind": "end-to-end", "ms": 1000 * r.e2e_s})
        rows += [{"candidate": r.candidate, "kind": "inter-token", "ms": 1000 * x} for x in (r.get("itl_s") or [])]
    return pd.DataFrame(rows, columns=["candidate", "kind", "ms"])


def render(ctx: Context) -> None:
    st.title("Latency")
    view = ctx.view
    if view is not None:
        task = st.selectbox("Task", ["all tasks", *view.tasks], key="lat_task")
        data = samples(view, None if task == "all tasks" else task)
        if data.empty:
            st.caption("No latency recorded.")
        for kind in ("TTFT", "inter-token", "end-to-end"):
            part = data[data.kind == kind]
            if part.empty:
                continue
            st.subheader(kind)
            st.altair_chart(alt.Chart(part).mark_boxplot(extent="min-max").encode(
                x=alt.X("ms:Q", title=f"{kind} (ms)"), y=alt.Y("candidate:N", title=None), color="candidate:N"),
                width="stretch")
    st.header("Load tests (`harness bench`)")
    benches = bench_runs(ctx.results)
    if not benches:
        st.caption(f"No `harness bench` results under {ctx.results}.")
        return
    name = st.selectbox("Bench run", [b for b, _ in benches], key="lat_bench")
    bench = dict(benches)[name]
    rows = [{"concurrency": lvl["concurrency"], "rate": lvl["rate"], "throughput (req/s)": lvl["request_throughput"],
             "e2e p50 (ms)": lvl["e2e_ms"].get("p50"), "e2e p99 (ms)": lvl["e2e_ms"].get("p99"),
             "ttft p50 (ms)": lvl["ttft_ms"].get("p50")} for lvl in bench["levels"]]
    table = pd.DataFrame(rows)
    long = table.melt(id_vars=["concurrency", "throughput (req/s)"],
                      value_vars=["e2e p50 (ms)", "e2e p99 (ms)", "ttft p50 (ms)"], var_name="latency", value_name="ms")
    st.altair_chart(alt.Chart(long).mark_line(point=True).encode(
        x="throughput (req/s):Q", y="ms:Q", color="latency:N", tooltip=["concurrency", "latency", "ms"]),
        width="stretch")
    st.dataframe(table, hide_index=True)
