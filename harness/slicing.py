"""Test examples assigned to slices: each declared slicing (`slice_spec.Slicing`, from the task file or the suite's
task entry) becomes a `Partition` of the examples' indices, checked against the data at plan time, so a field the
data lacks or a value no group holds is one line naming the file and field that declared it."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from harness.config import TaskRef, TaskSpec
from harness.errors import ConfigError
from harness.records import Example
from harness.slice_spec import Slicing, unique_names

MISSING = "(missing)"  # the slice of examples with no value in the slicing's field
EMPTY = "(empty)"  # the slice of an empty value, slicing by a field's values


@dataclass(frozen=True)
class Declared:
    """A slicing with where its author wrote it (errors name that file and field)."""

    slicing: Slicing
    file: Path
    field: str  # `slices.0` in a task file, `tasks.1.slices.0` in a suite


@dataclass(frozen=True)
class Partition:
    """One slicing of a task's test examples: slice name -> the indices of its examples, in data order."""

    slicing: str
    field: str
    slices: dict[str, tuple[int, ...]]
    min_size: int

    def too_small(self, name: str) -> bool:
        return len(self.slices[name]) < self.min_size

    @property
    def sizable(self) -> list[str]:
        return [name for name in self.slices if not self.too_small(name)]


def declared(spec: TaskSpec, ref: TaskRef, suite_file: Path, index: int) -> list[Declared]:
    """The task's own slicings, then those the suite's task entry adds; two of one name are refused."""
    out = [Declared(s, spec.file, f"slices.{i}") for i, s in enumerate(spec.slices)]
    out += [Declared(s, suite_file, f"tasks.{index}.slices.{i}") for i, s in enumerate(ref.slices)]
    twice = unique_names([d.slicing for d in out])
    if twice is not None:
        where = next(d for d in reversed(out) if d.slicing.name == twice)
        raise ConfigError(where.file, f"{where.field}.name", f"task {spec.name} already has a slicing {twice!r}")
    return out


def meta_columns(spec: TaskSpec, slicings: list[Declared]) -> tuple[str, ...]:
    """The data columns slicings read that are not already inputs (kept in each example's meta)."""
    fields = [d.slicing.field for d in slicings]
    return tuple(dict.fromkeys(f for f in fields if f != "reference" and f not in spec.data.inputs))


def partitions(slicings: list[Declared], examples: list[Example], labels: list[str] | None) -> list[Partition]:
    return [_partition(d, examples, labels) for d in slicings]


def _value_reader(d: Declared, examples: list[Example]) -> Callable[[Example], str | None]:
    name = d.slicing.field
    if name == "reference":
        return lambda ex: ex.reference if isinstance(ex.reference, str) else (ex.reference or [""])[0]
    if examples and name in examples[0].inputs:
        return lambda ex: ex.inputs[name]
    if any(name in ex.meta for ex in examples):
        return lambda ex: ex.meta.get(name)  # None: the example's data has no value there
    raise ConfigError(d.file, f"{d.field}.field", f"{name!r} is neither an input variable, `reference`, nor a column "
                      "of the task's test data")


def _terms(terms: list[str]) -> Callable[[str], bool]:
    """Whether a text holds one of the terms as a whole word, ignoring case (`casefold`: STRASSE holds straße): no
    word character touches the term on either side (`\\b` would never match after the `#` of `C#`)."""
    pattern = re.compile("|".join(rf"(?<!\w){re.escape(t.casefold())}(?!\w)" for t in terms))
    return lambda text: pattern.search(text.casefold()) is not None


def _derived(d: Declared, values: list[str], labels: list[str] | None) -> tuple[list[str], Callable[[str], str]]:
    """The slicing's slices in order, and the slice of a (present) value."""
    s = d.slicing
    if s.length_buckets is not None:
        edges = s.length_buckets
        order = [f"<{edges[0]}"] + [f"{a}-{b - 1}" for a, b in pairwise(edges)] + [f">={edges[-1]}"]
        return order, lambda text: order[sum(len(text) >= e for e in edges)]
    if s.length_at_least is not None:
        at_least = s.length_at_least
        return ["yes", "no"], lambda text: "yes" if len(text) >= at_least else "no"
    if s.contains_any is not None:
        holds = _terms(s.contains_any)
        return ["yes", "no"], lambda text: "yes" if holds(text) else "no"
    if s.groups is not None:
        mapping = _groups(d)
        every_label = set(labels) if labels is not None and s.field == "reference" else set()
        unmapped = sorted((set(values) | every_label) - set(mapping))
        if unmapped:
            raise ConfigError(d.file, f"{d.field}.groups", f"no group holds {', '.join(map(repr, unmapped[:5]))}"
                              + (f" and {len(unmapped) - 5} more" if len(unmapped) > 5 else ""))
        return list(dict.fromkeys(mapping.values())), mapping.__getitem__
    return sorted({v or EMPTY for v in values}), lambda text: text or EMPTY


def _partition(d: Declared, examples: list[Example], labels: list[str] | None) -> Partition:
    """Each example in one slice; examples with no value in the field in a slice of their own, `(missing)`, so that
    no criterion on the slicing can leave them out."""
    value = _value_reader(d, examples)
    values = [value(ex) for ex in examples]
    order, slice_of = _derived(d, [v for v in values if v is not None], labels)
    members: dict[str, list[int]] = {name: [] for name in order}
    for i, v in enumerate(values):
        members.setdefault(MISSING if v is None else slice_of(v), []).append(i)
    return Partition(d.slicing.name, d.slicing.field, {name: tuple(idx) for name, idx in members.items()},
                     d.slicing.min_size)


def _groups(d: Declared) -> dict[str, str]:
    """value -> group, from the inline mapping or its JSON file (beside the file that declares it)."""
    groups = d.slicing.groups
    if isinstance(groups, str):
        path = d.file.parent / groups
        try:
            groups = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(d.file, f"{d.field}.groups", f"cannot read {path}: {exc}") from None
        if not isinstance(groups, dict) or not all(isinstance(v, list) for v in groups.values()):
            raise ConfigError(d.file, f"{d.field}.groups", f"{path} is not a mapping of group -> list of values")
    assert isinstance(groups, dict)
    out: dict[str, str] = {}
    for group, values in groups.items():
        for v in map(str, values):
            if out.setdefault(v, group) != group:
                raise ConfigError(d.file, f"{d.field}.groups", f"{v!r} is in two groups, {out[v]} and {group}")
    return out
