"""What the dashboard reads: run directories (through harness.store and the runner's own loaders) turned
into pandas tables, and problems turned into messages rather than tracebacks."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import HarnessError
from harness.store import RunDir, read_json


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
    if not results.is_dir():
        return []
    out = []
    for path in sorted((p for p in results.iterdir() if (p / "run.json").exists()), reverse=True):
        try:
            record = read_json(path / "run.json")
            verdict = "–"
            if (path / "verdict.json").is_file():
                verdict = "passed" if read_json(path / "verdict.json").get("passed") else "not passed"
            out.append(RunSummary(path.name, path, record["suite_name"], record.get("started_at", ""),
                                  record.get("status", "?"), [c["name"] for c in record["suite"]["candidates"]],
                                  list(record["tasks"]), verdict))
        except (HarnessError, KeyError, TypeError, AttributeError) as exc:
            out.append(RunSummary(path.name, path, "?", "", "unreadable", [], [], "–", problem=str(exc)))
    return out


@dataclass
class RunView:
    """One run, loaded for the pages."""

    path: Path
    record: dict[str, Any]
    metrics: pd.DataFrame
    comparisons: pd.DataFrame
    verdicts: pd.DataFrame
    scores: pd.DataFrame
    predictions: pd.DataFrame
    detections: pd.DataFrame
    examples: dict[str, pd.DataFrame] = field(default_factory=dict)  # task -> id, inputs, reference
    labels: dict[str, list[str] | None] = field(default_factory=dict)
    costs: dict[str, float] = field(default_factory=dict)  # candidate -> cost per hour

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def candidates(self) -> list[str]:
        return [c["name"] for c in self.record["suite"]["candidates"]]

    @property
    def tasks(self) -> list[str]:
        return list(self.record["tasks"])

    def candidates_of(self, task: str) -> list[str]:
        return sorted(set(self.predictions.loc[self.predictions.task == task, "candidate"]),
                      key=self.candidates.index)


def _frame(path: Path) -> pd.DataFrame:
    return pd.DataFrame(read_json(path)) if path.is_file() else pd.DataFrame()


def _jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            raise HarnessError(f"{path}: line {number} is not JSON") from None
    return rows


def load_run(path: Path) -> RunView:
    """A run directory as tables; raises HarnessError with a readable message if it is missing or damaged."""
    from harness.runner import tasks_of_run

    if not path.is_dir():
        raise HarnessError(f"{path}: no such run directory")
    run = RunDir(path)
    record, suite, tasks = tasks_of_run(run)
    # Through the store's reader, which also tolerates the torn last line of a run still being written.
    predictions = [asdict(c) for cand in suite.candidates for task in tasks if cand.runs(task.name)
                   for c in run.read_predictions(cand.name, task.name)]
    detections = []
    for p in sorted((path / "detections").glob("*/*.jsonl")):
        for row in _jsonl(p):
            detections.append({"example_id": row["example_id"], "candidate": p.parent.name, "task": p.stem,
                               **row["finding"]})
    scores = pd.DataFrame(_jsonl(path / "scores.jsonl")) if (path / "scores.jsonl").is_file() else pd.DataFrame()
    verdicts = pd.DataFrame()
    if (path / "verdict.json").is_file():
        verdicts = pd.DataFrame(read_json(path / "verdict.json").get("criteria", []))
    view = RunView(path, record, _frame(path / "metrics.json"), _frame(path / "comparisons.json"), verdicts, scores,
                   pd.DataFrame(predictions), pd.DataFrame(detections))
    for task in tasks:
        view.examples[task.name] = pd.DataFrame(
            [{"example_id": ex.id, **{f"input:{k}": v for k, v in ex.inputs.items()},
              "reference": " | ".join(ex.references)} for ex in task.data.test])
        view.labels[task.name] = task.data.labels
    view.costs = {c.name: c.cost_per_hour for c in suite.candidates}
    return view


def bench_runs(results: Path) -> list[tuple[str, dict[str, Any]]]:
    """`harness bench` results (latency.json with a `levels` list) under `results`, newest first."""
    out = []
    for path in sorted(results.glob("*-bench-*/latency.json"), reverse=True) if results.is_dir() else []:
        try:
            data = read_json(path)
        except HarnessError:
            continue
        if isinstance(data, dict) and "levels" in data:
            out.append((path.parent.name, data))
    return out
