"""Examples from a task's data source (files, Hugging Face datasets, DVC) with its field mapping: stable ids, splits,
samples, the label-set check."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.config import DataSpec, TaskSpec
from harness.errors import ConfigError, HarnessError
from harness.records import Example
from harness.sources.base import Role
from harness.sources.files import read_table


@dataclass(frozen=True)
class TaskData:
    test: list[Example]
    train: list[Example]
    labels: list[str] | None
    files: dict[str, str]  # file path -> sha256, dataset@revision:split -> fingerprint, dvc:repo@rev:path -> md5
    revisions: dict[str, str] = field(default_factory=dict)  # identity -> the commit a moving revision resolved to


def _example_id(inputs: dict[str, str]) -> str:
    blob = json.dumps(inputs, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _to_examples(frame: pd.DataFrame, spec: DataSpec, task_file: Path, field_name: str,
                 source: str, meta_columns: tuple[str, ...] = ()) -> list[Example]:
    ref_cols = [spec.reference] if isinstance(spec.reference, str) else list(spec.reference or [])
    needed = [(f"data.inputs.{k}", v) for k, v in spec.inputs.items()]
    needed += [("data.reference", c) for c in ref_cols]
    if spec.id:
        needed.append(("data.id", spec.id))
    for where, column in needed:
        if column not in frame.columns:
            raise ConfigError(task_file, where, f"column {column!r} not in {field_name} "
                              f"(columns: {', '.join(map(str, frame.columns))})")
    kept = [c for c in meta_columns if c in frame.columns]
    examples, seen = [], set()
    for number, row in enumerate(frame.to_dict("records"), 1):
        missing = [c for c in spec.inputs.values() if row[c] is None or (isinstance(row[c], float) and pd.isna(row[c]))]
        if missing:
            raise ConfigError(task_file, field_name, f"{source} row {number}: input column {missing[0]!r} is null "
                              "(an empty input is written as \"\")")
        inputs = {k: str(row[c]) for k, c in spec.inputs.items()}
        refs = [str(row[c]) for c in ref_cols if not pd.isna(row[c]) and str(row[c]).strip()]
        reference: str | list[str] | None
        if not ref_cols:
            reference = None
        elif isinstance(spec.reference, str):
            reference = refs[0] if refs else ""
        else:
            reference = refs
        ex_id = str(row[spec.id]) if spec.id else _example_id(inputs)
        if ex_id in seen:
            # Exact duplicate rows keep distinct, stable ids by their order of appearance.
            n = 1
            while f"{ex_id}-{n}" in seen:
                n += 1
            ex_id = f"{ex_id}-{n}"
        seen.add(ex_id)
        meta = {c: text for c in kept if (text := _meta_text(row[c])) is not None}
        examples.append(Example(id=ex_id, inputs=inputs, reference=reference, meta=meta))
    return examples


def _meta_text(value: Any) -> str | None:
    """A data value as slices read it; None where it is missing. A column with a missing value reads as floats:
    7.0 is written 7, as the data has it."""
    if pd.api.types.is_scalar(value) and pd.isna(value):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _seeded_split(examples: list[Example], test_size: float, seed: int) -> tuple[list[Example], list[Example]]:
    order = np.random.default_rng(seed).permutation(len(examples))
    n_test = max(1, round(len(examples) * test_size))
    test_idx = set(order[:n_test].tolist())
    test = [e for i, e in enumerate(examples) if i in test_idx]
    train = [e for i, e in enumerate(examples) if i not in test_idx]
    return train, test


def stratified_sample(examples: list[Example], n: int, seed: int, stratify: bool) -> list[Example]:
    """A seeded sample of n examples; for labelled data every label gets its share (at least one while
    n allows). The result keeps the original order so that runs are stable."""
    if n >= len(examples):
        return list(examples)
    rng = np.random.default_rng(seed)
    if not stratify:
        keep = set(rng.choice(len(examples), size=n, replace=False).tolist())
        return [e for i, e in enumerate(examples) if i in keep]
    groups: dict[str, list[int]] = {}
    for i, e in enumerate(examples):
        groups.setdefault(str(e.reference), []).append(i)
    labels = sorted(groups)
    rng.shuffle(labels)
    for label in labels:
        rng.shuffle(groups[label])
    # Largest-remainder allocation by label share, at least one per label while there is room.
    shares = {lab: n * len(groups[lab]) / len(examples) for lab in labels}
    alloc = {lab: min(len(groups[lab]), int(shares[lab])) for lab in labels}
    for lab in labels:
        if sum(alloc.values()) >= n:
            break
        if alloc[lab] == 0:
            alloc[lab] = 1
    by_remainder = sorted(labels, key=lambda lab: shares[lab] - int(shares[lab]), reverse=True)
    while sum(alloc.values()) < n:
        for lab in by_remainder:
            if sum(alloc.values()) >= n:
                break
            if alloc[lab] < len(groups[lab]):
                alloc[lab] += 1
    while sum(alloc.values()) > n:
        lab = max(labels, key=lambda la: alloc[la])
        alloc[lab] -= 1
    keep = {i for lab in labels for i in groups[lab][: alloc[lab]]}
    return [e for i, e in enumerate(examples) if i in keep]


def _outside(rows: list[Example], labels: list[str]) -> str | None:
    """The references that are not labels (the first five, for a message), or None."""
    outside = sorted({str(e.reference) for e in rows} - set(labels))
    return ", ".join(outside[:5]) + (" …" if len(outside) > 5 else "") if outside else None


def load_labels(task: TaskSpec, task_file: Path) -> list[str] | None:
    if task.labels is None:
        return None
    if isinstance(task.labels, list):
        return list(task.labels)
    path = task.base_dir / task.labels
    if not path.is_file():
        raise ConfigError(task_file, "labels", f"label file not found: {path}")
    try:
        labels = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(path, None, f"malformed JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels) or not labels:
        raise ConfigError(path, None, "expected a non-empty JSON list of label strings")
    return labels


def load_task_data(task: TaskSpec, limit: int | None = None, sample: int | None = None,
                   seed: int = 0, meta_columns: tuple[str, ...] = ()) -> TaskData:
    """Load, split and cut down a task's examples; checks columns, emptiness and the label set. `meta_columns`:
    other columns kept in each example's `meta` where the data has them (what slices read)."""
    task_file = task.file
    tables = {t.role: t for t in task.data.source.tables(task_file)}
    files = {t.identity: t.digest for t in tables.values()}
    revisions = {t.identity: t.resolved for t in tables.values() if t.resolved}

    def examples(role: Role) -> list[Example]:
        table = tables.get(role)
        return (_to_examples(table.frame, task.data, task_file, table.field, table.identity, meta_columns)
                if table else [])

    if "all" in tables:
        split = tables["all"].split
        assert split is not None, "a source gives an `all` table with its split"
        train, test = _seeded_split(examples("all"), split.test_size, split.seed)
    else:
        test, train = examples("test"), examples("train")

    labels = load_labels(task, task_file)
    if labels is not None:
        for split_name, rows in (("test", test), ("train", train)):
            outside = _outside(rows, labels)
            if outside:
                raise ConfigError(task_file, "labels", f"label set does not cover the {split_name} data: {outside}")
    if sample is not None:
        if sample > len(test):
            raise ConfigError(task_file, "sample", f"asks for {sample} test examples but the task has {len(test)}")
        test = stratified_sample(test, sample, seed, stratify=labels is not None)
    if limit is not None:
        test = test[:limit]
    if not test:
        raise HarnessError(f"{task_file}: data.test: no test examples left")
    return TaskData(test=test, train=train, labels=labels, files=files, revisions=revisions)


def load_extra_rows(task: TaskSpec, path: Path, labels: list[str] | None, where: Path,
                    field_name: str) -> list[Example]:
    """More rows in the task's own columns (no id column needed), checked against its label set; errors name
    the file that asked for them (`where`) and its field."""
    spec = task.data.model_copy(update={"id": None})
    try:
        frame = read_table(path, spec.source.file_format(), where, field_name)
        rows = _to_examples(frame, spec, where, field_name, str(path))
    except ConfigError as exc:
        raise ConfigError(where, field_name, exc.message) from None
    outside = _outside(rows, labels) if labels is not None else None
    if outside:
        raise ConfigError(where, field_name, f"{path}: labels not in task {task.name}: {outside}")
    return rows
