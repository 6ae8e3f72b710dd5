"""Monitoring: `harness monitor` reports. Drift and quality per window with their rules, the alerts, the
words traffic uses that the reference never did, and the log rows behind an alert."""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from dashboard.context import Context
from dashboard.data import MonitorView, list_monitors, load_monitor, log_lines
from dashboard.widgets import failure
from harness.records import Reading
from harness.report import reading_text, signal_tables

STATUS_ICON = {"ok": "🟢 ok", "alert": "🔴 alert", "insufficient": "🟡 insufficient", "info": "⚪ no rule"}


def _cell(r: pd.Series) -> str:
    """A status mark and the reading as the terminal report writes it (value, interval or p-value)."""
    # JSON's nulls are NaN in the table; a reading's absent interval or p-value is None.
    fields: dict[str, Any] = {k: None if k != "value" and pd.isna(v) else v for k, v in r.items()
                              if k in Reading.__dataclass_fields__}
    return f"{STATUS_ICON[r.status].split()[0]} {reading_text(Reading(**fields))}"


def window_table(view: MonitorView) -> pd.DataFrame:
    """Windows × signals that have a rule, each cell the value, its interval and a status mark."""
    ruled = view.readings[view.readings.rule.notna()]
    cells = ruled.assign(cell=ruled.apply(_cell, axis=1))
    table = cells.pivot_table(index="window", columns="signal", values="cell", aggfunc="first", sort=False)
    rows = {w["window"]: w["n"] for w in view.record["windows"]}
    return table.reindex(list(rows)).rename_axis(None, axis=1).assign(rows=lambda t: [rows[w] for w in t.index])


def _trend(view: MonitorView, signal: str) -> alt.LayerChart | alt.FacetChart:
    part = view.readings[(view.readings.signal == signal) & (view.readings.window != "all")]
    base = alt.Chart(part).encode(x=alt.X("window:N", sort=None, title=None))
    layers = [base.mark_line(point=True).encode(y=alt.Y("value:Q", title=signal), color=alt.value("#4c78a8"))]
    if part.ci_low.notna().any():
        layers.insert(0, base.mark_area(opacity=0.2).encode(y="ci_low:Q", y2="ci_high:Q"))
    rules = [r for r in (view.record["monitor"].get("rules") or []) if r["signal"] == signal]
    for rule in rules:
        for key in ("at_most", "at_least"):
            if rule.get(key) is not None:
                layers.append(alt.Chart(pd.DataFrame({"y": [rule[key]]})).mark_rule(color="red", strokeDash=[4, 4])
                              .encode(y="y:Q"))
    return alt.layer(*layers)


def render(ctx: Context) -> None:
    st.title("Monitoring")
    names = list_monitors(ctx.results)
    if not names:
        st.info(f"No monitor reports under {ctx.results}. Run `harness monitor TRAFFIC.jsonl --against RUN_OR_SUITE "
                f"--results {ctx.results}`.")
        return
    view = load_monitor(ctx.results, st.selectbox("Report", names, key="mon_report"))
    record = view.record
    counts = record["counts"]
    st.caption(f"Task **{record['task']}**, traffic `{record['log']}` against `{record['against']}`"
               + (f", candidate {record['candidate']}" if record.get("candidate") else "")
               + f"; windows: {record['monitor']['window']}.")
    cols = st.columns(4)
    for col, (label, key) in zip(cols, [("alerts", "alert"), ("insufficient", "insufficient"), ("ok", "ok"),
                                        ("without rule", "info")], strict=True):
        col.metric(label, counts[key])
    if record.get("broken_lines"):
        st.warning(f"{len(record['broken_lines'])} broken lines were skipped; the first:")
        st.text(str(record["broken_lines"][0]))  # a line of the log: data, never rendered as Markdown
    st.subheader("Windows")
    st.dataframe(window_table(view), width="stretch")
    alerts = view.readings[view.readings.status == "alert"]
    st.subheader(f"Alerts ({len(alerts)})")
    for _, r in alerts.iterrows():
        failure(f"{r.window}: {r.signal} {_cell(r)[2:]} breaks {r.rule}.", r.evidence)  # it may quote traffic
    signals = list(dict.fromkeys(view.readings.signal))
    signal = st.selectbox("Trend of", signals, key="mon_signal")
    st.altair_chart(_trend(view, signal), width="stretch")
    window = st.selectbox("Window", [w["window"] for w in record["windows"]],
                          index=len(record["windows"]) - 1, key="mon_window")
    tables = signal_tables(view.details(window))
    for column, table in zip(st.columns(2) * len(tables), tables, strict=False):
        column.markdown(f"**{table.title}**")
        column.dataframe(pd.DataFrame(table.rows, columns=list(table.columns)), hide_index=True)
    behind = view.examples(window)
    if behind:
        st.subheader("Rows behind an alert")
        which = st.selectbox("Alert", list(behind), key="mon_behind")
        st.dataframe(log_lines(record["log"], behind[which]), hide_index=True, width="stretch")
