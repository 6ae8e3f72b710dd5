"""Pieces several pages draw the same way."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from harness.dashboard.data import RunView

NOT_METRICS = ("task", "candidate", "example_id", "error", "predicted_label")


def example_context(view: RunView, task: str, example_id: str) -> None:
    """An example's inputs and reference."""
    ex = view.examples[task].set_index("example_id").loc[example_id]
    for column, value in ex.items():
        if str(column).startswith("input:"):
            st.markdown(f"**{str(column).removeprefix('input:')}**")
            st.text(value)
    st.markdown(f"**reference:** {ex['reference']}")


def metric_columns(scores: pd.DataFrame) -> list[str]:
    """The per-example metric columns of scores.jsonl rows."""
    return [c for c in scores.columns if c not in NOT_METRICS and pd.api.types.is_numeric_dtype(scores[c])]
