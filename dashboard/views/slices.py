"""Slices: a metric by slice with interval bars, candidates side by side, the slices where a fine-tune is worse than
its base although better overall first; each candidate's worst slice and best-worst gap; for classification, the
confusion pairs that grew most from base to fine-tune, each linking to its examples on the Examples page."""

from __future__ import annotations

from urllib.parse import urlencode

import altair as alt
import pandas as pd
import streamlit as st

from dashboard.context import Context
from dashboard.data import RunView
from harness.slice_scoring import finetune_bases


def grown_confusions(view: RunView, task: str, finetune: str, base: str, most: int = 10) -> pd.DataFrame:
    """(reference, predicted) pairs of wrong answers, counted for the fine-tune and its base on the same examples,
    the pairs the fine-tune makes more often first (an invalid answer is predicted `(invalid)`)."""
    s = view.scores
    rows = s[(s.task == task) & s.candidate.isin([finetune, base])].merge(
        view.examples[task][["example_id", "reference"]], on="example_id")
    rows = rows.assign(predicted=rows.predicted_label.astype(object).where(rows.predicted_label.notna(), "(invalid)"))
    wrong = rows[rows.predicted != rows.reference]
    counts = wrong.groupby(["reference", "predicted", "candidate"]).size().unstack("candidate", fill_value=0)
    counts = counts.reindex(columns=[base, finetune], fill_value=0)
    counts["grew"] = counts[finetune] - counts[base]
    return counts[counts.grew > 0].sort_values("grew", ascending=False).head(most).reset_index()


def _chart(rows: pd.DataFrame, order: list[str], metric: str) -> alt.LayerChart:
    base = alt.Chart(rows).encode(y=alt.Y("label:N", sort=order, title=None), yOffset="candidate:N",
                                  color="candidate:N")
    bars = base.mark_rule(strokeWidth=2).encode(x=alt.X("ci_low:Q", title=metric), x2="ci_high:Q",
                                                tooltip=["slice", "candidate", "value", "ci_low", "ci_high", "n"])
    return bars + base.mark_point(filled=True).encode(x="value:Q")


def slice_table(rows: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """The metric by slice, indexed by slice, its size and one column per candidate (`value [low, high]`), slices in
    the chart's order."""
    cells = rows.assign(cell=[f"{v:.3f} [{lo:.3f}, {hi:.3f}]" for v, lo, hi in
                              zip(rows.value, rows.ci_low, rows.ci_high, strict=True)])
    table = cells.pivot_table(index=["label", "n"], columns="candidate", values="cell", aggfunc="first", sort=False)
    table = table.reindex(columns=list(dict.fromkeys(rows.candidate))).reset_index()
    return table.set_index("label").loc[order].rename_axis("slice")


def _confusions(view: RunView, task: str) -> None:
    for finetune, base in finetune_bases(view.suite).items():
        if finetune not in view.candidates_of(task) or base not in view.candidates_of(task):
            continue
        st.subheader(f"Confusions that grew from {base} to {finetune}")
        grown = grown_confusions(view, task, finetune, base)
        if grown.empty:
            st.caption(f"{finetune} makes no confusion more often than {base}.")
            continue
        lines = []
        for r in grown.itertuples(index=False):
            link = "?" + urlencode({"page": "Examples", "task": task, "candidate": finetune,
                                    "reference": r.reference, "predicted": r.predicted})
            lines.append(f"- `{r.reference}` read as `{r.predicted}`: {getattr(r, base)} → {getattr(r, finetune)} "
                         f"([examples]({link}))")
        st.markdown("\n".join(lines))


def render(ctx: Context) -> None:
    st.title("Slices")
    view = ctx.picked()
    if view is None:
        return
    found = view.slices
    if not found or not found["slicings"]:
        st.info("This run's tasks declare no slices: add `slices:` to a task or to the suite's task entry "
                "(see the README).")
        return
    slicings = found["slicings"]
    picked = st.selectbox("Slicing", range(len(slicings)), key="sl_slicing",
                          format_func=lambda i: f"{slicings[i]['task']} by {slicings[i]['slicing']}")
    sl = slicings[picked]
    task, name = sl["task"], sl["slicing"]
    results = pd.DataFrame(found["results"])
    results = results[(results.task == task) & (results.slicing == name)]
    metric = st.selectbox("Metric", list(dict.fromkeys(results.metric)), key="sl_metric")
    flags = [c for c in found["comparisons"] if c["simpson"] and c["task"] == task and c["slicing"] == name]
    for c in flags:
        if c["metric"] == metric:
            st.warning(f"{c['slice']}: {c['candidate']} is worse than its base {c['baseline']} here "
                       f"({c['delta']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}], n={c['n']}) although better "
                       "overall")
    noise = [c for c in found["comparisons"] if c.get("within_noise") and c["task"] == task
             and c["slicing"] == name and c["metric"] == metric]
    if noise:
        st.caption("Worse than its base by the point estimate only, within noise (not flagged): " + "; ".join(
            f"{c['slice']} ({c['candidate']} {c['delta']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}])"
            for c in noise))
    flagged = {c["slice"] for c in flags if c["metric"] == metric}
    rows = results[results.metric == metric].copy()
    rows["label"] = [f"{s} ⚑" if s in flagged else f"{s} (too small)" if small else s
                     for s, small in zip(rows.slice, rows.too_small, strict=True)]
    order = sorted(dict.fromkeys(rows.label), key=lambda label: (not label.endswith("⚑"),
                                                                  label.endswith("(too small)")))
    st.caption(f"{found['confidence']:.0%} intervals, each slice resampled on its own; a slice under "
               f"{sl['min_size']} examples is too small to rank.")
    st.altair_chart(_chart(rows, order, metric), width="stretch")
    st.table(slice_table(rows, order))
    gaps = pd.DataFrame([g for g in found["gaps"] if g["task"] == task and g["slicing"] == name
                         and g["metric"] == metric])
    if not gaps.empty:
        st.dataframe(gaps[["candidate", "worst", "worst_value", "best", "best_value", "gap", "ci_low", "ci_high"]],
                     hide_index=True)
    if view.labels.get(task):
        _confusions(view, task)
