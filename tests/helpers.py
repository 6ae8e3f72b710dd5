"""Builders shared by the metric tests: a ScoringInput from plain lists."""

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
