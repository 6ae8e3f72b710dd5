"""Prompt rendering: chat messages (system, few-shot turns, the question) and the same as plain text."""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np

from harness.config import TaskSpec
from harness.data import Example
from harness.errors import ConfigError


@dataclass(frozen=True)
class Prompt:
    messages: list[dict[str, str]]
    text: str  # the same prompt for a plain completion model


def template_fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def check_template(task: TaskSpec) -> None:
    allowed = set(task.data.inputs) | {"labels"}
    try:
        fields = template_fields(task.prompt.template)
    except ValueError as exc:  # an unbalanced brace; a literal one is written {{ or }}
        raise ConfigError(task.file, "prompt.template", f"{exc} (write a literal brace as {{{{ or }}}})") from None
    unknown = fields - allowed
    if unknown:
        raise ConfigError(task.file, "prompt.template",
                          f"unknown slot(s) {sorted(unknown)}; known: {sorted(allowed)}")


def answer_of(example: Example) -> str:
    refs = example.references
    return refs[0] if refs else ""


def choose_few_shot(train: list[Example], k: int, seed: int, stratify: bool) -> list[Example]:
    """k training examples, seeded; for labelled data, distinct labels first so the shots are varied."""
    if k == 0:
        return []
    if len(train) < k:
        raise ConfigError("suite", "few_shot", f"asks for {k} shots but the task has {len(train)} training examples")
    order = np.random.default_rng(seed).permutation(len(train)).tolist()
    if not stratify:
        return [train[i] for i in order[:k]]
    chosen, labels = [], set()
    for i in order:
        if train[i].reference not in labels:
            chosen.append(train[i])
            labels.add(train[i].reference)
        if len(chosen) == k:
            return chosen
    rest = [train[i] for i in order if train[i] not in chosen]
    return chosen + rest[: k - len(chosen)]


def render(task: TaskSpec, example: Example, shots: list[Example], labels: list[str] | None) -> Prompt:
    def user(ex: Example) -> str:
        slots = dict(ex.inputs)
        if labels is not None:
            slots["labels"] = ", ".join(labels)
        return task.prompt.template.format(**slots)

    system = task.prompt.system
    if system and labels is not None:
        system = system.replace("{labels}", ", ".join(labels))
    messages: list[dict[str, str]] = []
    if system:
        messages.append({"role": "system", "content": system})
    for shot in shots:
        messages.append({"role": "user", "content": user(shot)})
        messages.append({"role": "assistant", "content": answer_of(shot)})
    messages.append({"role": "user", "content": user(example)})

    prefix = task.prompt.answer_prefix
    parts = [system] if system else []
    parts += [f"{user(shot)}{prefix}{answer_of(shot)}" for shot in shots]
    # No trailing space: SentencePiece-style tokenisers fold the space into the answer's first token,
    # and a prompt ending in a bare space pushes base models off their usual continuations.
    parts.append(f"{user(example)}{prefix}".rstrip(" "))
    return Prompt(messages=messages, text=task.prompt.few_shot_separator.join(parts))
