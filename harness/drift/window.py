"""One window's evidence while its rows stream past: the streamed signals' merged statistics, the row count and
time span, and bounded uniform samples of rows; nothing else of a row outlives its chunk. The same object serves a
day and the whole log, so neither holds every row's features at once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

import numpy as np

from harness.drift.base import DRIFT_SIGNALS, DriftInput, Side, StreamedSignal
from harness.traffic import LoggedRow

T = TypeVar("T")


@dataclass
class Reservoir(Generic[T]):
    """A uniform sample of at most `size` of the items seen so far (Algorithm R, its draws made a batch at a time)."""

    size: int
    rng: np.random.Generator
    items: list[T] = field(default_factory=list)
    seen: int = 0

    def add(self, batch: Sequence[T]) -> None:
        room = max(0, min(self.size - len(self.items), len(batch)))
        self.items.extend(batch[:room])
        rest = len(batch) - room
        if rest:
            # Item number g (from 0) replaces a uniform slot of 0..g when that slot is inside the sample.
            slots = self.rng.integers(0, np.arange(self.seen + room, self.seen + len(batch)) + 1)
            for i in np.flatnonzero(slots < self.size):
                self.items[slots[i]] = batch[room + i]
        self.seen += len(batch)

    @property
    def sampled(self) -> bool:
        return self.seen > len(self.items)


@dataclass(frozen=True)
class Streams:
    """The streamed signals that apply to this task and reference, each with its reference side prepared once."""

    prepared: dict[str, tuple[StreamedSignal[Any, Any], Any]]

    @classmethod
    def of(cls, inp: DriftInput) -> Streams:
        """`inp` carries the reference and an empty traffic side shaped as the traffic's will be."""
        return cls({name: (signal, signal.prepare(inp)) for name, signal in DRIFT_SIGNALS.items()
                    if isinstance(signal, StreamedSignal) and signal.applies(inp)})

    def summarize(self, traffic: Side) -> dict[str, Any]:
        return {name: signal.summarize(traffic, reference) for name, (signal, reference) in self.prepared.items()}


@dataclass
class WindowStats:
    """Everything a window's readings need, filled a chunk of rows at a time."""

    sample: Reservoir[LoggedRow]  # the task's metrics on every row, the classifier, signals that do not stream
    labelled: Reservoir[LoggedRow]  # rows with a reference, for the metrics that need one
    summaries: dict[str, Any] = field(default_factory=dict)
    rows: int = 0
    first: datetime | None = None
    last: datetime | None = None

    @classmethod
    def new(cls, size: int, seed: int, window: str) -> WindowStats:
        rng = np.random.default_rng([seed, *window.encode()])
        return cls(Reservoir(size, rng), Reservoir(size, rng))

    def add(self, rows: Sequence[LoggedRow], summaries: dict[str, Any], streams: Streams) -> None:
        for name, summary in summaries.items():
            seen = self.summaries.get(name)
            self.summaries[name] = summary if seen is None else streams.prepared[name][0].merge(seen, summary)
        self.rows += len(rows)
        times = [r.row.utc for r in rows]
        self.first = min([*times, *([self.first] if self.first else [])])
        self.last = max([*times, *([self.last] if self.last else [])])
        self.sample.add(rows)
        self.labelled.add([r for r in rows if r.row.reference is not None])
