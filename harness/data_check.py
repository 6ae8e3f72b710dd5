"""Data checks before training and scoring: sizes, duplicates, train↔test overlap, label balance, lengths.

Texts are compared on their inputs, normalised (lower case, no punctuation, single spaces): a
*near duplicate* is identical after normalisation but not byte for byte; an *exact duplicate* is
identical as written. A test example whose normalised inputs occur in the training split is an
*overlap* (contamination): it blocks training unless the suite says `allow_overlap: true`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

import numpy as np

from harness.data import Example, TaskData
from harness.run_record import TaskDataReport

MIN_TRAIN_EXAMPLES = 500
_PUNCT = re.compile(r"[^\w\s]")


def normalise_text(text: str) -> str:
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def _joined(ex: Example) -> str:
    return "\n".join(ex.inputs.values())


def duplicates(examples: list[Example]) -> tuple[int, int]:
    """(exact, near): rows equal to an earlier row as written, and equal only after normalisation."""
    seen_exact: set[str] = set()
    seen_norm: set[str] = set()
    exact = near = 0
    for ex in examples:
        raw = _joined(ex)
        norm = normalise_text(raw)
        if raw in seen_exact:
            exact += 1
        elif norm in seen_norm:
            near += 1
        seen_exact.add(raw)
        seen_norm.add(norm)
    return exact, near


def overlap(train: list[Example], test: list[Example]) -> list[str]:
    """Ids of test examples whose normalised inputs occur in the training split."""
    train_texts = {normalise_text(_joined(ex)) for ex in train}
    return [ex.id for ex in test if normalise_text(_joined(ex)) in train_texts]


def without_overlap(train: list[Example], test: list[Example]) -> list[Example]:
    """The training rows whose normalised inputs do not occur in the test split."""
    test_texts = {normalise_text(_joined(ex)) for ex in test}
    return [ex for ex in train if normalise_text(_joined(ex)) not in test_texts]


def _lengths(examples: list[Example], count: Callable[[str], int]) -> dict[str, float]:
    if not examples:
        return {}
    lengths = np.array([count(_joined(ex)) for ex in examples])
    return {"mean": float(lengths.mean()), "p50": float(np.percentile(lengths, 50)),
            "p95": float(np.percentile(lengths, 95)), "max": int(lengths.max())}


def check_task(name: str, data: TaskData, allow_overlap: bool, count: Callable[[str], int],
               length_unit: str) -> TaskDataReport:
    splits = {"train": data.train, "test": data.test}
    dup = {s: duplicates(rows) for s, rows in splits.items()}
    overlapping = overlap(data.train, data.test)
    report = TaskDataReport(
        task=name, sizes={s: len(rows) for s, rows in splits.items()},
        exact_duplicates={s: d[0] for s, d in dup.items()}, near_duplicates={s: d[1] for s, d in dup.items()},
        overlap=len(overlapping), overlap_ids=overlapping[:20], length_unit=length_unit,
        lengths={s: _lengths(rows, count) for s, rows in splits.items()},
    )
    if data.labels is not None:
        train_counts = Counter(str(ex.reference) for ex in data.train)
        test_counts = Counter(str(ex.reference) for ex in data.test)
        report.labels = {lab: {"train": train_counts[lab], "test": test_counts[lab]} for lab in data.labels}
        present = [train_counts[lab] for lab in data.labels if train_counts[lab]]
        report.imbalance = max(present) / min(present) if present else None
        missing = [lab for lab in data.labels if data.train and not train_counts[lab]]
        if missing:
            report.warnings.append(f"{len(missing)} labels have no training example: {', '.join(missing[:5])}")
        if report.imbalance and report.imbalance > 10:
            report.warnings.append(f"label imbalance: {report.imbalance:.1f}x between most and fewest examples")
    if 0 < len(data.train) < MIN_TRAIN_EXAMPLES:
        report.warnings.append(f"only {len(data.train)} training examples (fewer than {MIN_TRAIN_EXAMPLES})")
    for split, (exact, near) in dup.items():
        if exact or near:
            report.warnings.append(f"{split}: {exact} exact and {near} near duplicates")
    if overlapping:
        message = f"{len(overlapping)} test examples also occur in train (normalised), e.g. {overlapping[0]}"
        (report.warnings if allow_overlap else report.blocking).append(message)
    return report


def word_count(text: str) -> int:
    return len(text.split())
