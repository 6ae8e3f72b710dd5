"""Production traffic in: the JSONL log format `harness monitor` reads, checked line by line, and its windows.

One JSON object per line (README, "Monitoring"):

    {"time": "2026-11-20T09:31:02Z", "inputs": {"text": "Where is my card?"}, "output": "card_arrival",
     "task": "banking77", "candidate": "smol-ft", "id": "req-17", "error": null,
     "latency": {"ttft_ms": 41, "e2e_ms": 230, "itl_ms": [12, 11], "output_tokens": 4},
     "reference": "card_arrival", "rating": 4, "meta": {...}}

`time`, `inputs` (the task's input fields) and `output` are required (`output` may be null when `error`
says why); `reference` is a true label or reference answer from feedback; `task` may be left out when
the log holds one task. Naive timestamps are read as UTC. A line that breaks any of this stops the read
with its file, line and field, unless the caller asks to skip bad lines, and then every one is counted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness.config import TaskSpec
from harness.data import load_labels
from harness.errors import HarnessError
from harness.records import Completion, Example

Window = Literal["day", "week", "month", "all"]


class TrafficLatency(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ttft_ms: Annotated[float, Field(ge=0)] | None = None
    e2e_ms: Annotated[float, Field(ge=0)] | None = None
    itl_ms: list[Annotated[float, Field(ge=0)]] = Field(default_factory=list)
    output_tokens: Annotated[int, Field(ge=0)] | None = None


class TrafficRow(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    time: datetime
    inputs: dict[str, str]
    output: str | None
    task: str | None = None
    candidate: str | None = None
    id: str | None = None
    error: str | None = None
    latency: TrafficLatency | None = None
    reference: str | list[str] | None = None
    rating: Annotated[int, Field(ge=1, le=5)] | None = None
    meta: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _output_or_error(self) -> TrafficRow:
        if self.output is None and not self.error:
            raise ValueError("`output` is null but no `error` says why")
        return self

    @property
    def utc(self) -> datetime:
        return self.time.replace(tzinfo=timezone.utc) if self.time.tzinfo is None else self.time


@dataclass(frozen=True)
class LoggedRow:
    line: int
    row: TrafficRow

    def example(self) -> Example:
        return Example(self.row.id or f"line-{self.line}", dict(self.row.inputs), self.row.reference)

    def completion(self, task: str) -> Completion:
        lat = self.row.latency or TrafficLatency()
        return Completion(self.example().id, self.row.candidate or "traffic", task, self.row.output or "",
                          completion_tokens=lat.output_tokens,
                          ttft_s=None if lat.ttft_ms is None else lat.ttft_ms / 1000,
                          itl_s=[x / 1000 for x in lat.itl_ms],
                          e2e_s=None if lat.e2e_ms is None else lat.e2e_ms / 1000, error=self.row.error)


@dataclass(frozen=True)
class Traffic:
    """The task's rows of one log file, in file order, with every line that was not used accounted for."""

    file: Path
    task: str
    rows: list[LoggedRow]
    lines: int
    other_tasks: int = 0
    broken: list[str] = field(default_factory=list)  # "line 7: time: …" for each skipped bad line

    def windows(self, window: Window) -> dict[str, list[LoggedRow]]:
        """Rows per window, in time order of the windows."""
        out: dict[str, list[LoggedRow]] = {}
        for r in sorted(self.rows, key=lambda r: r.row.utc):
            out.setdefault(window_of(r.row.utc, window), []).append(r)
        return out


def window_of(when: datetime, window: Window) -> str:
    """The window a time falls in: 2026-11-20, 2026-W47 (ISO week), 2026-11, or all."""
    if window == "day":
        return when.date().isoformat()
    if window == "week":
        year, week, _ = when.isocalendar()
        return f"{year}-W{week:02d}"
    if window == "month":
        return f"{when.year}-{when.month:02d}"
    return "all"


def _problems(row: TrafficRow, task: TaskSpec, labels: list[str] | None) -> Iterator[str]:
    for name in task.data.inputs:
        if name not in row.inputs:
            yield f"inputs.{name}: missing (task {task.name} reads {', '.join(task.data.inputs)})"
    if labels is not None and isinstance(row.reference, str) and row.reference not in labels:
        yield f"reference: {row.reference!r} is not a label of task {task.name}"


def read_traffic(path: Path, task: TaskSpec, labels: list[str] | None = None, skip_bad: bool = False) -> Traffic:
    """The rows of `task` in a traffic log (a true label must be one of the task's `labels`, read from the
    task when not given). Bad lines raise HarnessError naming file, line and field, or with
    `skip_bad` are counted in `Traffic.broken`."""
    labels = load_labels(task, task.file) if labels is None else labels
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HarnessError(f"{path}: traffic log not found") from None
    except (UnicodeDecodeError, OSError) as exc:
        raise HarnessError(f"{path}: cannot read the traffic log ({exc})") from None
    rows: list[LoggedRow] = []
    broken: list[str] = []
    other = lines = 0
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        lines += 1
        problem = None
        try:
            row = TrafficRow.model_validate(json.loads(line))
        except json.JSONDecodeError as exc:
            problem = f"not JSON ({exc.msg})"
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            why = first["msg"].removeprefix("Value error, ")
            problem = f"{where}: {why}" if where else why
        if problem is None and row.task is not None and row.task != task.name:
            other += 1
            continue
        if problem is None:
            problem = next(_problems(row, task, labels), None)
        if problem is not None:
            if not skip_bad:
                raise HarnessError(f"{path}: line {number}: {problem}")
            broken.append(f"line {number}: {problem}")
            continue
        rows.append(LoggedRow(number, row))
    if not rows:
        why = f" ({other} rows of other tasks, {len(broken)} broken lines)" if other or broken else ""
        raise HarnessError(f"{path}: no traffic rows for task {task.name}{why}")
    return Traffic(path, task.name, rows, lines, other, broken)
