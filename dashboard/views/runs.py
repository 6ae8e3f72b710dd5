"""Runs: every run with its suite, date, candidates, tasks and verdict; pick one or two."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.context import Context


def render(ctx: Context) -> None:
    st.title("Runs")
    if not ctx.runs:
        st.info(f"No runs under {ctx.results} yet.")
        return
    table = pd.DataFrame([{"run": r.run_id, "suite": r.suite, "started": r.started_at, "status": r.status,
                           "verdict": r.verdict, "candidates": ", ".join(r.candidates), "tasks": ", ".join(r.tasks)}
                          for r in ctx.runs])
    st.dataframe(table, hide_index=True, width="stretch")
    for r in ctx.runs:
        if r.problem:
            st.warning(f"{r.run_id} cannot be read:")
            st.text(r.problem)
    readable = [r.run_id for r in ctx.runs if r.problem is None]
    current = [v.run_id for v in ctx.views if v.run_id in readable]
    picked = st.multiselect("Pick one run (or two to compare)", readable, default=current, max_selections=2,
                            key="runs_picker")
    if picked != st.session_state.get("chosen_runs"):
        st.session_state["chosen_runs"] = picked
        st.rerun()
