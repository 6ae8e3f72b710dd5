"""Builders shared by the tests: a ScoringInput from plain lists, a traffic log from plain lists."""

from __future__ import annotations

from harness.backends.base import Completion
from harness.config import TaskSpec
from harness.data import Example
from harness.metrics import ScoringInput

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
