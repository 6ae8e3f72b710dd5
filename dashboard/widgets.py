"""Pieces several pages draw the same way."""

from __future__ import annotations

from collections import Counter

import pandas as pd
import streamlit as st

from dashboard.data import RunView

NOT_METRICS = ("task", "candidate", "example_id", "error", "predicted_label")


LABEL_CHARS = 90


def failure(what: str, detail: object) -> None:
    """A failure: what failed, in the page's own words, and its detail (a server's body, a file's problem, which
    may quote data) as plain text, never rendered as Markdown."""
    st.error(what)
    st.text(str(detail))


def example_context(view: RunView, task: str, example_id: str) -> None:
    """An example's inputs and reference, as plain text (data-set text is never rendered as Markdown)."""
    ex = view.examples[task].set_index("example_id").loc[example_id]
    for column, value in ex.items():
        if str(column).startswith("input:"):
            st.caption(str(column).removeprefix("input:"))
            st.text(value)
    st.caption("reference")
    st.text(ex["reference"])


def example_labels(view: RunView, task: str) -> dict[str, str]:
    """What a reviewer picks an example by: the start of its first input on one line (with the start of its
    id only where two texts are the same)."""
    frame = view.examples[task]
    inputs = [c for c in frame.columns if str(c).startswith("input:")]
    texts = frame[inputs[0]] if inputs else frame.example_id
    labels = {}
    for ex_id, text in zip(frame.example_id, texts, strict=True):
        flat = " ".join(str(text).split())
        labels[str(ex_id)] = (flat if len(flat) <= LABEL_CHARS else flat[: LABEL_CHARS - 1] + "…") or str(ex_id)
    counts = Counter(labels.values())
    return {ex_id: (f"{text} ({ex_id[:8]})" if counts[text] > 1 else text) for ex_id, text in labels.items()}


def scores_table(scored: pd.Series) -> pd.DataFrame:
    """One example's per-metric values as a small two-column table. Values are shown as text: a row holds
    numbers and the predicted label side by side, which one typed column cannot."""
    rows = [{"metric": k, "value": f"{v:.4g}" if isinstance(v, int | float) else str(v)}
            for k, v in scored.items() if k not in ("task", "candidate", "example_id")
            and v is not None and not (isinstance(v, float) and pd.isna(v))]
    return pd.DataFrame(rows)


def metric_columns(scores: pd.DataFrame) -> list[str]:
    """The per-example metric columns of scores.jsonl rows."""
    return [c for c in scores.columns if c not in NOT_METRICS and pd.api.types.is_numeric_dtype(scores[c])]
