"""Results on disk: run directories, append-only prediction files, and atomic JSON writes.

A run directory (DESIGN.md) is complete only when run.json says `"status": "complete"`; everything
before that point is resumable. Predictions are appended one line per Completion and flushed, so a
crash or kill loses at most the line being written, which the reader then ignores.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.backends.base import Completion
from harness.errors import HarnessError

SCHEMA_VERSION = 1


def nan_to_none(record: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN: a value that does not exist (no latency for a failed request) is written as null."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in record.items()}


def write_atomic(path: Path, lines: Iterable[str]) -> None:
    """Write a text file atomically: a reader sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.writelines(lines)
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, [json.dumps(data, indent=2, ensure_ascii=False, allow_nan=True), "\n"])


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    write_atomic(path, (json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise HarnessError(f"{path}: not found") from None
    except json.JSONDecodeError as exc:
        raise HarnessError(f"{path}: malformed JSON ({exc.msg} at line {exc.lineno})") from None


def new_run_id(suite_name: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{suite_name}"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def run_json(self) -> Path:
        return self.path / "run.json"

    def predictions_file(self, candidate: str, task: str) -> Path:
        return self.path / "predictions" / candidate / f"{task}.jsonl"

    def detections_file(self, candidate: str, task: str) -> Path:
        return self.path / "detections" / candidate / f"{task}.jsonl"

    def read_run(self) -> dict[str, Any]:
        return read_json(self.run_json)

    def is_complete(self) -> bool:
        return self.run_json.is_file() and self.read_run().get("status") == "complete"

    def read_predictions(self, candidate: str, task: str) -> list[Completion]:
        """Every readable Completion; a torn last line (a kill mid-write) is ignored."""
        path = self.predictions_file(candidate, task)
        if not path.is_file():
            return []
        out = []
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                out.append(Completion.from_json(line))
            except (json.JSONDecodeError, TypeError):
                if number == len(lines):
                    break
                raise HarnessError(f"{path}: line {number} is not a Completion") from None
        return out

    def finished(self, candidate: str, task: str) -> dict[str, Completion]:
        """The successful Completion of each example (the first, should there be several)."""
        done: dict[str, Completion] = {}
        for c in self.read_predictions(candidate, task):
            if c.ok and c.example_id not in done:
                done[c.example_id] = c
        return done

    def compact_predictions(self, candidate: str, task: str, keep_ids: Iterable[str]) -> dict[str, Completion]:
        """Before resuming: keep one successful line per example (dropping failed attempts, duplicates, a
        torn last line and examples no longer in the task), rewritten atomically. Returns what is kept."""
        path = self.predictions_file(candidate, task)
        wanted = set(keep_ids)
        done = {k: v for k, v in self.finished(candidate, task).items() if k in wanted}
        if path.is_file():
            write_atomic(path, (c.to_json() + "\n" for c in done.values()))
        return done


class PredictionWriter:
    """Appends Completions to a JSONL file, one flushed line each."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = path.open("a", encoding="utf-8")

    def append(self, completion: Completion) -> None:
        self._handle.write(completion.to_json() + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def find_resumable(results: Path, suite_name: str) -> Path | None:
    """The newest unfinished run of this suite."""
    runs = sorted(p for p in results.glob(f"*-{suite_name}") if (p / "run.json").is_file())
    for path in reversed(runs):
        if not RunDir(path).is_complete():
            return path
    return None
