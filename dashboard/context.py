"""What every page gets: the results folder, the runs in it and the one or two runs picked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from dashboard.data import RunSummary, RunView


@dataclass
class Context:
    results: Path
    runs: list[RunSummary]
    views: list[RunView]  # the picked runs, loaded (the newest readable one if none was picked)

    @property
    def view(self) -> RunView | None:
        return self.views[0] if self.views else None

    def picked(self) -> RunView | None:
        """The run a page shows; None, with a hint on the page, when no run is loaded."""
        if self.view is None:
            st.info("Pick a run on the Runs page.")
        return self.view
