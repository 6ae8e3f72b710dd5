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
from array import array
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
class RowIndex:
    """Where one window's rows sit in the log file: their byte offsets and line numbers, in file order (16 bytes
    a row, so a log of any size is indexed without holding its rows)."""

    offsets: array[int] = field(default_factory=lambda: array("q"))
    lines: array[int] = field(default_factory=lambda: array("q"))

    def __len__(self) -> int:
        return len(self.offsets)


@dataclass(frozen=True)
class TrafficLog:
    """The task's rows of one log file, checked in one pass and read back window by window, with every line that
    was not used accounted for."""

    file: Path
    task: str
    windows: dict[str, RowIndex]  # in time order
    lines: int
    other_tasks: int = 0
    broken: list[str] = field(default_factory=list)  # "line 7: time: …" for each skipped bad line

    @property
    def rows(self) -> int:
        return sum(len(index) for index in self.windows.values())

    def read(self, window: str) -> Iterator[LoggedRow]:
        """The window's rows, parsed again from the file one at a time (each was checked by the scan)."""
        index = self.windows[window]
        with self.file.open("rb") as handle:
            for offset, line in zip(index.offsets, index.lines, strict=True):
                if handle.tell() != offset:
                    handle.seek(offset)
                yield LoggedRow(line, TrafficRow.model_validate_json(handle.readline()))

    def read_all(self) -> Iterator[LoggedRow]:
        for window in self.windows:
            yield from self.read(window)


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


def _problem(raw: bytes, task: TaskSpec, labels: list[str] | None) -> tuple[TrafficRow | None, str | None]:
    """The line's row, or why it cannot be one (None, None for a row of another task)."""
    try:
        row = TrafficRow.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            try:
                json.loads(raw)
            except json.JSONDecodeError as decode:
                return None, f"not JSON ({decode.msg})"
            except UnicodeDecodeError as decode:
                raise HarnessError(f"cannot read the traffic log ({decode})") from None
        where = ".".join(str(part) for part in first["loc"])
        why = first["msg"].removeprefix("Value error, ")
        return None, f"{where}: {why}" if where else why
    if row.task is not None and row.task != task.name:
        return None, None
    return row, next(_problems(row, task, labels), None)


def scan_traffic(path: Path, task: TaskSpec, window: Window, labels: list[str] | None = None,
                 skip_bad: bool = False) -> TrafficLog:
    """Index the rows of `task` in a traffic log by window (a true label must be one of the task's `labels`, read
    from the task when not given). Bad lines raise HarnessError naming file, line and field, or with `skip_bad`
    are counted in `TrafficLog.broken`. Nothing but each row's place is kept."""
    labels = load_labels(task, task.file) if labels is None else labels
    windows: dict[str, RowIndex] = {}
    broken: list[str] = []
    other = lines = offset = 0
    try:
        with path.open("rb") as handle:
            for number, raw in enumerate(handle, 1):
                at, offset = offset, offset + len(raw)
                if not raw.strip():
                    continue
                lines += 1
                try:
                    row, problem = _problem(raw, task, labels)
                except HarnessError as exc:
                    raise HarnessError(f"{path}: {exc}") from None
                if row is None and problem is None:
                    other += 1
                    continue
                if problem is not None or row is None:
                    if not skip_bad:
                        raise HarnessError(f"{path}: line {number}: {problem}")
                    broken.append(f"line {number}: {problem}")
                    continue
                index = windows.setdefault(window_of(row.utc, window), RowIndex())
                index.offsets.append(at)
                index.lines.append(number)
    except FileNotFoundError:
        raise HarnessError(f"{path}: traffic log not found") from None
    except OSError as exc:
        raise HarnessError(f"{path}: cannot read the traffic log ({exc})") from None
    if not windows:
        why = f" ({other} rows of other tasks, {len(broken)} broken lines)" if other or broken else ""
        raise HarnessError(f"{path}: no traffic rows for task {task.name}{why}")
    return TrafficLog(path, task.name, dict(sorted(windows.items())), lines, other, broken)
