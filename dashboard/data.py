"""What the dashboard reads: run directories, only through the library's store (harness.store) and the
planner's rebuild of a finished run, turned into pandas tables; problems become messages, not tracebacks."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from harness.config import Suite
from harness.errors import HarnessError
from harness.json_files import read_json
from harness.metrics import TaskMetrics
from harness.plan import tasks_of_run
from harness.ratings import Output
from harness.records import Completion, Correction
from harness.run_record import RunRecord
from harness.snapshots import suite_of
from harness.store import ResultsDir, RunDir, chosen_answers


@dataclass
class RunSummary:
    run_id: str
    path: Path
    suite: str
    started_at: str
    status: str
    candidates: list[str]
    tasks: list[str]
    verdict: str
    problem: str | None = None


def list_runs(results: Path) -> list[RunSummary]:
    """Every run directory under `results`, newest first; a damaged one is listed with its problem."""
    out = []
    for run in ResultsDir(results).runs():
        try:
            record = run.read_run()
            suite = suite_of(record, run.run_json)
            found = run.read_verdict()
            verdict = "–" if found is None else ("passed" if found.get("passed") else "not passed")
            out.append(RunSummary(run.run_id, run.path, record.suite_name, record.started_at, record.status,
                                  [c.name for c in suite.candidates], list(record.tasks), verdict))
        except HarnessError as exc:
            out.append(RunSummary(run.run_id, run.path, "?", "", "unreadable", [], [], "–", problem=str(exc)))
    return out


# Shared by every session's pages (st.cache_resource): each lazily loaded table is read once, not once per session.
_LOADING = threading.RLock()
T = TypeVar("T")


@dataclass
class RunView:
    """One run, loaded for the pages. The small tables are read up front; the large ones (predictions, scores,
    answers, detections) on a page's first use, one task's predictions at a time: the Scorecard needs none of them."""

    path: Path
    record: RunRecord
    suite: Suite
    metrics: pd.DataFrame
    comparisons: pd.DataFrame
    verdicts: pd.DataFrame
    examples: dict[str, pd.DataFrame] = field(default_factory=dict)  # task -> id, inputs, reference
    labels: dict[str, list[str] | None] = field(default_factory=dict)
    task_metrics: dict[str, TaskMetrics] = field(default_factory=dict)  # task -> its metrics (its own ones included)
    corrections: list[Correction] = field(default_factory=list)  # corrected.json: raw beside corrected by labels
    slices: dict[str, Any] | None = None  # slices.json: metrics by slice, gaps, flags (None: no task has slices)
    _loaded: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def _once(self, key: Any, load: Callable[[], T]) -> T:
        if key not in self._loaded:
            with _LOADING:
                if key not in self._loaded:
                    self._loaded[key] = load()
        found: T = self._loaded[key]
        return found

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def candidates(self) -> list[str]:
        return [c.name for c in self.suite.candidates]

    @property
    def costs(self) -> dict[str, float]:
        """Candidate -> cost per hour."""
        return {c.name: c.cost_per_hour for c in self.suite.candidates}

    @property
    def tasks(self) -> list[str]:
        return list(self.record.tasks)

    def _read(self, task: str) -> dict[str, list[Completion]]:
        """Candidate -> the task's predictions, through the store's reader (which also tolerates the torn last
        line of a run still being written); each file read once, for the tables and the answers alike."""
        run = RunDir(self.path)
        return self._once(("read", task), lambda: {c.name: run.read_predictions(c.name, task)
                                                   for c in self.suite.candidates if c.runs(task)})

    def predictions_of(self, task: str, example_id: str) -> pd.DataFrame:
        """One example's predictions.jsonl rows (one per request, retries included): from the task's predictions if
        a page has read them, else only that example's lines (the Examples page's first view reads no other)."""
        if ("read", task) in self._loaded:
            found = [c for lines in self._read(task).values() for c in lines if c.example_id == example_id]
        else:
            run = RunDir(self.path)
            found = [c for cand in self.suite.candidates if cand.runs(task)
                     for c in run.read_predictions(cand.name, task, example_id)]
        return pd.DataFrame([dict(vars(c)) for c in found], columns=[f.name for f in fields(Completion)])

    @property
    def predictions(self) -> pd.DataFrame:
        """Every task's predictions, candidate by candidate."""
        # A shallow copy of each record's fields (dataclasses.asdict deep-copies every inter-token list).
        return self._once("predictions", lambda: pd.DataFrame(
            [dict(vars(c)) for cand in self.candidates for task in self.examples
             for c in self._read(task).get(cand, [])]))

    @property
    def scores(self) -> pd.DataFrame:
        return self._once("scores", lambda: pd.DataFrame(RunDir(self.path).read_scores()))

    @property
    def detections(self) -> pd.DataFrame:
        return self._once("detections", lambda: pd.DataFrame(RunDir(self.path).all_detections()))

    def _chosen(self) -> dict[Output, Completion]:
        """The answer of each output that is scored and rated (RunDir.answers)."""
        return self._once("chosen", lambda: {Output(task, ex_id, cand): c for task in self.examples
                                             for cand, lines in self._read(task).items()
                                             for ex_id, c in chosen_answers(lines).items()})

    @property
    def answers(self) -> dict[Output, str]:
        """The text scored and rated of each output."""
        return self._once("answers", lambda: {o: c.text for o, c in self._chosen().items()})

    @property
    def failed(self) -> set[Output]:
        """Outputs whose request failed (no answer to rate or label)."""
        return self._once("failed", lambda: {o for o, c in self._chosen().items() if not c.ok})

    def answered(self, output: Output) -> bool:
        """Whether the output has an answer to rate or label (a failed request has none)."""
        return output in self.answers and output not in self.failed

    def candidates_of(self, task: str) -> list[str]:
        """The candidates with predictions for the task, in the suite's order (a file with a line in it: known
        without reading the predictions)."""
        run = RunDir(self.path)
        return [c.name for c in self.suite.candidates if c.runs(task) and run.has_predictions(c.name, task)]


def load_run(path: Path) -> RunView:
    """A run directory as tables; raises HarnessError with a readable message if it is missing or damaged."""
    if not path.is_dir():
        raise HarnessError(f"{path}: no such run directory")
    run = RunDir(path)
    record, suite, tasks = tasks_of_run(run)
    verdict = run.read_verdict()
    view = RunView(path, record, suite, pd.DataFrame([r.to_dict() for r in run.read_metrics()]),
                   pd.DataFrame(run.read_comparisons()),
                   pd.DataFrame(verdict.get("criteria", []) if verdict else []),
                   corrections=[Correction.from_dict(row) for row in run.read_corrections()],
                   slices=run.read_slices())
    for task in tasks:
        view.examples[task.name] = pd.DataFrame(
            [{"example_id": ex.id, **{f"input:{k}": v for k, v in ex.inputs.items()},
              "reference": " | ".join(ex.references)} for ex in task.data.test])
        view.labels[task.name] = task.data.labels
        view.task_metrics[task.name] = task.metrics
    return view


def bench_runs(results: Path) -> list[tuple[str, dict[str, Any]]]:
    """`harness bench` results (latency.json with a `levels` list) under `results`, newest first."""
    out = []
    for bench in ResultsDir(results).benches():
        try:
            data = read_json(bench.latency_json)
        except HarnessError:
            continue
        if isinstance(data, dict) and "levels" in data:
            out.append((bench.path.name, data))
    return out


@dataclass
class MonitorView:
    """One `harness monitor` report: readings as a table (window, signal, value, interval, status, …)."""

    name: str
    record: dict[str, Any]
    readings: pd.DataFrame

    def details(self, window: str) -> dict[str, Any]:
        return next(w.get("details", {}) for w in self.record["windows"] if w["window"] == window)

    def examples(self, window: str) -> dict[str, list[int]]:
        return next(w.get("examples", {}) for w in self.record["windows"] if w["window"] == window)


def list_monitors(results: Path) -> list[str]:
    return [m.path.name for m in ResultsDir(results).monitors()]


def load_monitor(results: Path, name: str) -> MonitorView:
    folder = next(m for m in ResultsDir(results).monitors() if m.path.name == name)
    record = folder.read()
    rows = [r for w in record["windows"] for r in w["readings"]]
    return MonitorView(name, record, pd.DataFrame(rows))


def log_lines(path: str, lines: list[int]) -> pd.DataFrame:
    """The traffic rows at these line numbers of a log (time, inputs, output, reference), if it is still there."""
    wanted, out = set(lines), []
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if number in wanted:
                    row = json.loads(line)
                    out.append({"line": number, "time": row.get("time"),
                                "input": " | ".join(str(v) for v in row.get("inputs", {}).values()),
                                "output": row.get("output"), "reference": row.get("reference")})
    except (OSError, json.JSONDecodeError):
        return pd.DataFrame(columns=["line", "time", "input", "output", "reference"])
    return pd.DataFrame(out, columns=["line", "time", "input", "output", "reference"])
