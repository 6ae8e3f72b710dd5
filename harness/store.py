"""Results on disk: the results folder, run directories, bench directories, append-only prediction files
and atomic JSON writes. Every file name a run or the results folder holds is spelled here and nowhere else.

A run directory (DESIGN.md) is complete only when run.json says `"status": "complete"`; everything
before that point is resumable. Predictions are appended one line per Completion and flushed, so a
crash or kill loses at most the line being written, which the reader then ignores.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from harness.errors import HarnessError, redact_all
from harness.json_files import (
    PredictionWriter,
    jsonl_lines,
    parse_lines,
    read_json,
    read_jsonl,
    write_atomic,
    write_json,
    write_jsonl,
)
from harness.records import Completion, MetricResult
from harness.run_record import SCHEMA_VERSION as SCHEMA_VERSION
from harness.run_record import MetricRow, RunRecord, first_error

# Written into every adapter folder the harness trains: base model, data, settings and versions.
LINEAGE_FILE = "lineage.json"


def read_lineage(adapter: Path) -> dict[str, Any]:
    """An adapter's lineage, or {} for one not trained here."""
    path = adapter / LINEAGE_FILE
    if not path.is_file():
        return {}
    lineage = read_json(path)
    if not isinstance(lineage, dict):
        raise HarnessError(f"{path}: not an adapter lineage (expected a JSON object)")
    return lineage


def new_run_id(suite_name: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{suite_name}"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


_METRIC_ROWS = TypeAdapter(list[MetricRow])


def _entry(name: str) -> Any:
    """A file or folder of a results, run or bench directory, by the one name this module gives it."""
    return property(lambda self: self.path / name, doc=f"{name} in this directory")


class RunDir:
    """One run: run.json (the record and status), predictions/, detections/ and judgements/ per candidate and task,
    metrics.json, comparisons.json, slices.json, scores.jsonl, latency.json, verdict.json, report.md and logs/."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def run_id(self) -> str:
        return self.path.name

    run_json = _entry("run.json")
    metrics_json = _entry("metrics.json")
    comparisons_json = _entry("comparisons.json")
    corrected_json = _entry("corrected.json")
    slices_json = _entry("slices.json")
    scores_jsonl = _entry("scores.jsonl")
    latency_json = _entry("latency.json")
    verdict_json = _entry("verdict.json")
    report_md = _entry("report.md")
    logs_dir = _entry("logs")

    def predictions_file(self, candidate: str, task: str) -> Path:
        return self.path / "predictions" / candidate / f"{task}.jsonl"

    def detections_file(self, candidate: str, task: str) -> Path:
        return self.path / "detections" / candidate / f"{task}.jsonl"

    def judgements_file(self, candidate: str, task: str) -> Path:
        return self.path / "judgements" / candidate / f"{task}.jsonl"

    def changed_at(self) -> float:
        """The latest modification time of any file of the run: what a reader caching the run keys on (a
        resumed run appends answers without touching run.json until it ends)."""
        return max((p.stat().st_mtime for p in self.path.rglob("*") if p.is_file()), default=0.0)

    def exists(self) -> bool:
        return self.run_json.is_file()

    def read_run(self) -> RunRecord:
        return RunRecord.read(read_json(self.run_json), self.run_json)

    def write_run(self, record: RunRecord) -> None:
        # Credentials in the suite's URLs are never stored.
        write_json(self.run_json, redact_all(record.model_dump(mode="json")))

    def is_complete(self) -> bool:
        return self.exists() and self.read_run().status == "complete"

    def write_metrics(self, results: list[MetricResult]) -> None:
        write_json(self.metrics_json, [r.to_dict() for r in results])

    def read_metrics(self) -> list[MetricResult]:
        """Every metric result, as scoring made it; a row written without its confidence (before schema 3) takes
        the run's bootstrap confidence."""
        if not self.metrics_json.is_file():
            return []
        try:
            rows = _METRIC_ROWS.validate_python(read_json(self.metrics_json))
        except ValidationError as exc:
            field, message = first_error(exc)
            raise HarnessError(f"{self.metrics_json}: not metric results this harness can read "
                               f"({f'{field}: ' if field else ''}{message})") from None
        if not rows:
            return []
        confidence = self.read_run().bootstrap.confidence
        return [r.result(confidence) for r in rows]

    def write_comparisons(self, rows: list[dict[str, Any]]) -> None:
        write_json(self.comparisons_json, rows)

    def read_comparisons(self) -> list[dict[str, Any]]:
        return self._read_list(self.comparisons_json)

    def write_scores(self, rows: Iterable[dict[str, Any]]) -> None:
        write_jsonl(self.scores_jsonl, rows)

    def read_scores(self) -> list[dict[str, Any]]:
        return read_jsonl(self.scores_jsonl) if self.scores_jsonl.is_file() else []

    def write_corrections(self, rows: list[dict[str, Any]]) -> None:
        write_json(self.corrected_json, rows)

    def read_corrections(self) -> list[dict[str, Any]]:
        """corrected.json: each machine-scored metric raw and corrected by reviewers' labels ([] before any)."""
        found = read_json(self.corrected_json) if self.corrected_json.is_file() else []
        return found if isinstance(found, list) else []

    def write_slices(self, record: dict[str, Any]) -> None:
        write_json(self.slices_json, record)

    def read_slices(self) -> dict[str, Any] | None:
        """slices.json: metrics by slice, paired differences, gaps and flags (None for a task without slices)."""
        found = read_json(self.slices_json) if self.slices_json.is_file() else None
        return found if isinstance(found, dict) else None

    def write_latency(self, summary: dict[str, Any]) -> None:
        write_json(self.latency_json, summary)

    def write_verdict(self, record: dict[str, Any]) -> None:
        write_json(self.verdict_json, record)

    def read_verdict(self) -> dict[str, Any] | None:
        if not self.verdict_json.is_file():
            return None
        record = read_json(self.verdict_json)
        if not isinstance(record, dict):
            raise HarnessError(f"{self.verdict_json}: not a verdict record (expected a JSON object)")
        return record

    def write_report(self, text: str) -> None:
        write_atomic(self.report_md, [text])

    def _read_list(self, path: Path) -> list[dict[str, Any]]:
        if not path.is_file():
            return []
        rows = read_json(path)
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise HarnessError(f"{path}: expected a JSON list of objects")
        return rows

    def read_detections(self, candidate: str, task: str) -> dict[str, dict[str, Any]]:
        """Kept findings by example id; a damaged file is recomputed, not trusted (so it reads as empty)."""
        path = self.detections_file(candidate, task)
        if not path.is_file():
            return {}
        try:
            return {row["example_id"]: row for row in read_jsonl(path)}
        except (HarnessError, KeyError, TypeError):
            return {}

    def write_detections(self, candidate: str, task: str, rows: Iterable[dict[str, Any]]) -> None:
        write_jsonl(self.detections_file(candidate, task), rows)

    def read_judgements(self, candidate: str, task: str) -> dict[tuple[str, str], dict[str, Any]]:
        """Kept judgements by (metric, example id); a damaged file is judged again, not trusted."""
        path = self.judgements_file(candidate, task)
        if not path.is_file():
            return {}
        try:
            return {(row["metric"], row["example_id"]): row for row in read_jsonl(path)}
        except (HarnessError, KeyError, TypeError):
            return {}

    def write_judgements(self, candidate: str, task: str, rows: Iterable[dict[str, Any]]) -> None:
        write_jsonl(self.judgements_file(candidate, task), rows)

    def all_detections(self) -> list[dict[str, Any]]:
        """Every kept finding, flattened with its candidate and task."""
        out = []
        for path in sorted((self.path / "detections").glob("*/*.jsonl")):
            for row in read_jsonl(path):
                out.append({"example_id": row["example_id"], "candidate": path.parent.name, "task": path.stem,
                            **row["finding"]})
        return out

    def has_predictions(self, candidate: str, task: str) -> bool:
        """Whether the file starts with a whole line (a torn line alone is no prediction), without reading the rest."""
        path = self.predictions_file(candidate, task)
        if not path.is_file():
            return False
        with path.open("rb") as handle:
            first = handle.readline()
        return first.endswith(b"\n") and bool(first.strip())

    def read_predictions(self, candidate: str, task: str, example_id: str | None = None) -> list[Completion]:
        """Every readable Completion, or only those of `example_id`; a torn last line (a kill mid-write) is ignored."""
        path = self.predictions_file(candidate, task)
        if not path.is_file():
            return []
        lines = jsonl_lines(path)
        numbered = list(enumerate(lines, 1))
        if example_id is not None:
            # Only the lines naming the example are parsed (a page showing one example of 10,000 parses 1 line in
            # 10,000): the id appears in its line as json.dumps writes it (Completion.to_json keeps non-ASCII
            # characters; a file rewritten by another tool may escape them).
            named = {json.dumps(example_id, ensure_ascii=False), json.dumps(example_id)}
            numbered = [(number, line) for number, line in numbered if any(n in line for n in named)]
        out = _completions(parse_lines([line for _, line in numbered]))
        if out is None:
            out = self._parse_each(path, numbered, len(lines))
        return out if example_id is None else [c for c in out if c.example_id == example_id]

    @staticmethod
    def _parse_each(path: Path, numbered: list[tuple[int, str]], last: int) -> list[Completion]:
        """Line by line, to name the line that is not a Completion (or drop a torn last line)."""
        out = []
        for number, line in numbered:
            if not line.strip():
                continue
            try:
                out.append(Completion.from_json(line))
            except (json.JSONDecodeError, TypeError):
                if number == last:
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

    def answers(self, candidate: str, task: str) -> dict[str, Completion]:
        """The answer of each example that is scored and rated: its successful Completion (the first, should
        there be several), else its last failed attempt."""
        return chosen_answers(self.read_predictions(candidate, task))

    def compact_predictions(self, candidate: str, task: str, keep_ids: Iterable[str]) -> dict[str, Completion]:
        """Before resuming: keep one successful line per example (dropping failed attempts, duplicates, a
        torn last line and examples no longer in the task), rewritten atomically. Returns what is kept."""
        path = self.predictions_file(candidate, task)
        wanted = set(keep_ids)
        done = {k: v for k, v in self.finished(candidate, task).items() if k in wanted}
        if path.is_file():
            write_atomic(path, (c.to_json() + "\n" for c in done.values()))
        return done

    def copy_answers(self, source: RunDir, candidate: str, task: str) -> None:
        """Another run's answers as this run's (`harness rescore`), with its findings and judgements: each is kept with
        the answer and the detector or judge behind it, so a changed one is asked again."""
        for file_of in (RunDir.predictions_file, RunDir.detections_file, RunDir.judgements_file):
            if file_of(source, candidate, task).is_file():
                write_atomic(file_of(self, candidate, task), [file_of(source, candidate, task).read_text()])

    def prediction_writer(self, candidate: str, task: str) -> PredictionWriter:
        return PredictionWriter(self.predictions_file(candidate, task))


def _completions(parsed: list[Any] | None) -> list[Completion] | None:
    """Parsed lines as Completions, or None where one is not (the line-by-line reading then names it)."""
    if parsed is None or not all(isinstance(row, dict) for row in parsed):
        return None
    try:
        return [Completion(**row) for row in parsed]
    except TypeError:
        return None


def chosen_answers(predictions: Iterable[Completion]) -> dict[str, Completion]:
    """`RunDir.answers` of predictions already read (a reader that needs both reads the file once)."""
    out: dict[str, Completion] = {}
    for c in predictions:
        if c.example_id not in out or (c.ok and not out[c.example_id].ok):
            out[c.example_id] = c
    return out


class BenchDir:
    """One `harness bench` load test: latency.json, latency.png, report.md and the server logs."""

    def __init__(self, path: Path) -> None:
        self.path = path

    latency_json = _entry("latency.json")
    plot_png = _entry("latency.png")
    report_md = _entry("report.md")
    logs_dir = _entry("logs")


class MonitorDir:
    """One `harness monitor` report: monitor.json (every window's readings) and report.md."""

    def __init__(self, path: Path) -> None:
        self.path = path

    monitor_json = _entry("monitor.json")
    report_md = _entry("report.md")

    def write(self, record: dict[str, Any], markdown: str) -> None:
        write_json(self.monitor_json, record)
        write_atomic(self.report_md, [markdown])

    def read(self) -> dict[str, Any]:
        record = read_json(self.monitor_json)
        if not isinstance(record, dict) or not isinstance(record.get("windows"), list):
            raise HarnessError(f"{self.monitor_json}: not a monitor report")
        return record


class ResultsDir:
    """The results folder: run directories, bench directories, monitor reports, the generation cache and the ratings
    database (trained adapters live in one store for every results folder: `models.adapter_store`)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    ratings_db = _entry("ratings.sqlite")
    generations_db = _entry("generations.sqlite")  # the generation cache (generation_cache.py)
    # The default MLflow store: a SQLite database and its artifact folder, no server needed.
    mlflow_dir = _entry("mlflow")

    def run(self, run_id: str) -> RunDir:
        return RunDir(self.path / run_id)

    def runs(self) -> list[RunDir]:
        """Every run directory (one with a run.json), newest first."""
        if not self.path.is_dir():
            return []
        return [RunDir(p) for p in sorted(self.path.iterdir(), reverse=True) if (p / "run.json").exists()]

    def new_bench(self, candidate: str) -> BenchDir:
        path = self.path / f"{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S')}-bench-{candidate}"
        path.mkdir(parents=True)
        return BenchDir(path)

    def benches(self) -> list[BenchDir]:
        """`harness bench` directories, newest first."""
        if not self.path.is_dir():
            return []
        return [BenchDir(p.parent) for p in sorted(self.path.glob("*-bench-*/latency.json"), reverse=True)]

    def new_monitor(self, task: str) -> MonitorDir:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        path = self.path / "monitors" / f"{stamp}-{task}"
        n = 1
        while path.exists():
            n += 1
            path = self.path / "monitors" / f"{stamp}-{task}-{n}"
        path.mkdir(parents=True)
        return MonitorDir(path)

    def monitors(self) -> list[MonitorDir]:
        """`harness monitor` reports, newest first."""
        return [MonitorDir(p.parent) for p in sorted((self.path / "monitors").glob("*/monitor.json"), reverse=True)]

    def find_resumable(self, suite_name: str) -> RunDir | None:
        """The newest unfinished run of this suite."""
        runs = sorted(p for p in self.path.glob(f"*-{suite_name}") if (p / "run.json").is_file())
        for path in reversed(runs):
            if not RunDir(path).is_complete():
                return RunDir(path)
        return None
