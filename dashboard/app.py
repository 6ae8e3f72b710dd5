"""The dashboard's entry point: run selection, page navigation, and a readable message instead of a
traceback when a run directory is missing or damaged. Results folder: $HARNESS_RESULTS (default results)."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import streamlit as st

from dashboard.context import Context
from dashboard.data import RunView, list_runs, load_run
from dashboard.widgets import failure
from harness.errors import HarnessError
from harness.store import ResultsDir

# Page -> its module under dashboard/views (a `render(ctx)` each), imported when first shown: a page's libraries (the
# Agreement page's statistics, the Monitoring page's drift signals) cost nothing on the pages that do not use them.
PAGES = {"Runs": "runs", "Scorecard": "scorecard", "Examples": "examples", "Slices": "slices", "Latency": "latency",
         "Review": "review", "Agreement": "agreement", "Monitoring": "monitoring"}
# Pages that read no run: they show something before any `harness run`.
WITHOUT_RUNS = {"Runs", "Monitoring"}


@st.cache_resource(show_spinner=False)
def _load(path: str, stamp: float) -> RunView:
    """A run's tables, cached by path and the latest change to any of its files. Shared, not copied: pages only read
    them (st.cache_data unpickled a copy of every table, the predictions' too, on every rerun of every page)."""
    return load_run(Path(path))


def main() -> None:
    st.set_page_config(page_title="harness", layout="wide")
    results = Path(os.environ.get("HARNESS_RESULTS", "results"))
    wanted = st.query_params.get("page", "Runs")
    page = st.sidebar.radio("Page", list(PAGES), index=list(PAGES).index(wanted) if wanted in PAGES else 0,
                            key="page")
    all_runs = list_runs(results)
    readable = [r for r in all_runs if r.problem is None]
    if not readable and page not in WITHOUT_RUNS:
        st.info(f"No readable runs under {results}. Run `harness run SUITE --results {results}` first.")
        return
    chosen = st.session_state.get("chosen_runs") or [r.run_id for r in readable[:1]]
    views = []
    for run_id in chosen:
        run = ResultsDir(results).run(run_id)
        try:
            views.append(_load(str(run.path), run.changed_at()))
        except (HarnessError, OSError) as exc:
            failure(f"Run {run_id} cannot be shown:", exc)
    importlib.import_module(f"dashboard.views.{PAGES[page]}").render(Context(results, all_runs, views))


main()
