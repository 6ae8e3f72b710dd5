"""Builders shared by the tests: a ScoringInput from plain lists, a traffic log from plain lists, a run record."""

from __future__ import annotations

from harness.backends.base import Completion
from harness.config import TaskSpec
from harness.data import Example
from harness.metrics import ScoringInput
from harness.run_record import SCHEMA_VERSION, RunRecord

TASK = TaskSpec.model_validate({
    "name": "t", "kind": "generation", "data": {"test": "x.jsonl", "inputs": {"q": "q"}, "reference": "r"},
    "prompt": {"template": "{q}"}, "metrics": ["exact_match"],
})


def scoring_input(texts: list[str], references: list, labels: list[str] | None = None,
                  inputs: list[dict[str, str]] | None = None, errors: list[str | None] | None = None,
                  **timing: list) -> ScoringInput:
    examples = [Example(id=f"e{i}", inputs=(inputs[i] if inputs else {"q": ""}), reference=r)
                for i, r in enumerate(references)]
    completions = []
    for i, t in enumerate(texts):
        extra = {k: v[i] for k, v in timing.items()}
        completions.append(Completion(f"e{i}", "c", "t", t, error=errors[i] if errors else None, **extra))
    return ScoringInput(task=TASK, examples=examples, completions=completions, labels=labels)


def traffic_log(path, texts, outputs, start="2026-11-02T00:00:00+00:00", per_day=100, references=None,
                field="text", **extra):
    """A traffic log in the documented format: `per_day` rows a day from `start`, one JSON object per line."""
    import json
    from datetime import datetime, timedelta

    t0 = datetime.fromisoformat(start)
    step = timedelta(days=1) / per_day
    with open(path, "w", encoding="utf-8") as handle:
        for i, (text, output) in enumerate(zip(texts, outputs, strict=True)):
            row = {"time": (t0 + i * step).isoformat(), "inputs": {field: text}, "output": output, **extra}
            if references is not None and references[i] is not None:
                row["reference"] = references[i]
            handle.write(json.dumps(row) + "\n")
    return path


def run_record(**changes) -> RunRecord:
    """A finished run's record of one task (`qa`) and one candidate (`c`), as the pipeline writes it."""
    record = {
        "schema_version": SCHEMA_VERSION, "run_id": "r1", "status": "complete", "suite_name": "s",
        "suite_file": "suite.yaml", "suite_sha256": "0" * 64,
        "suite": {"name": "s", "tasks": [{"task": "qa"}], "candidates": [{"name": "c", "model": "m"}]},
        "tasks": {"qa": {"version": 1, "kind": "generation", "file": "qa/task.yaml", "task_sha256": "1" * 64,
                         "data_sha256": {"qa/test.jsonl": "2" * 64}, "n_test": 10, "n_train": 0,
                         "metrics": ["token_f1"]}},
        "seed": 0, "bootstrap": {"resamples": 1000, "confidence": 0.95}, "versions": {"python": "3.11"},
        "git_revision": None, "started_at": "2026-11-30T00:00:00+00:00", "finished_at": "2026-11-30T00:01:00+00:00",
        "timings_s": {"c/qa": 2.0}, "failed_requests": 0,
    }
    return RunRecord.model_validate({**record, **changes})


def remote_suite(path, name: str, task, url: str):
    """A suite of one candidate on an OpenAI-compatible server (the fake one), sent one request at a time and never
    retried, so that every fault the server injects is a failed request."""
    from tests.conftest import write_yaml

    return write_yaml(path, {
        "name": name, "tasks": [str(task)],
        "candidates": [{"name": "remote", "backend": "openai", "url": url, "model": "fake",
                        "max_retries": 0, "concurrency": 1}],
        "bootstrap": {"resamples": 100}})
