"""The drift-signal interface and registry: a signal compares a window of production traffic with the
task's reference data and answers with a value and an interval (or a test's p-value).

A new signal is one class with `@register`; the monitor computes every registered signal whose needs the
traffic and reference meet, and a manifest's `monitor.rules` can name it. A `StreamedSignal` reduces traffic to
statistics that add up chunk by chunk (counts, histograms), so the monitor reads it on every row of a window or
of the whole log without keeping the rows; any other signal is measured on the window's bounded sample.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, TypeVar

import numpy as np

from harness.config import TaskSpec
from harness.registry import Registry
from harness.stats import percentile_interval

# outputs: the model's answers on both sides; labels: a classification task (predicted labels on both sides).
SignalNeed = Literal["outputs", "labels"]


@dataclass(frozen=True)
class Side:
    """One side of a comparison, row by row: the inputs (joined), the model's outputs, the labels they name."""

    texts: list[str]
    outputs: list[str] | None = None
    labels: list[str | None] | None = None

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class DriftInput:
    task: TaskSpec
    reference: Side
    traffic: Side
    resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0
    # The rows `traffic` was sampled from, when it is a sample (the monitor's bounded one of a large window).
    traffic_rows: int | None = None

    @property
    def rows(self) -> int:
        """How many traffic rows the measurement speaks for."""
        return len(self.traffic) if self.traffic_rows is None else self.traffic_rows

    def rng(self, salt: str) -> np.random.Generator:
        return np.random.default_rng([self.seed, *salt.encode()])


@dataclass(frozen=True)
class Measurement:
    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    evidence: str = ""
    # What the signal's `tables` and `rows_behind` read: new terms, label changes, the rows most unlike the reference.
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DetailTable:
    """A list a person reads beside a signal's value (new words, moved labels): a title and rows of named columns,
    shown alike by the report and the Monitoring page."""

    title: str
    columns: tuple[str, ...]
    rows: list[dict[str, Any]]


class DriftSignal(ABC):
    name: ClassVar[str]
    # interval: a value with an interval, judged by at_most/at_least; test: a p-value, by p_below.
    kind: ClassVar[Literal["interval", "test"]] = "interval"
    # An interval signal that also reports a test's p-value, which a rule may name through p_below instead.
    gives_p_value: ClassVar[bool] = False
    needs: ClassVar[frozenset[SignalNeed]] = frozenset()
    decimals: ClassVar[int] = 3
    description: ClassVar[str]
    # The rules that apply when the manifest names none for this signal (MonitorRule fields, sans signal).
    default_rules: ClassVar[tuple[dict[str, float], ...]] = ()

    def applies(self, inp: DriftInput) -> bool:
        sides = (inp.reference, inp.traffic)
        if "outputs" in self.needs and any(s.outputs is None for s in sides):
            return False
        return not ("labels" in self.needs and any(s.labels is None for s in sides))

    @abstractmethod
    def measure(self, inp: DriftInput) -> Measurement: ...

    def rows_behind(self, inp: DriftInput, m: Measurement) -> list[int]:
        """The traffic rows (indices into `inp.traffic`) a person should read when this signal alerts, most telling
        first; none by default."""
        return []

    def tables(self, detail: dict[str, Any]) -> list[DetailTable]:
        """How the `detail` of a measurement reads (it comes back from the monitor's JSON); none by default."""
        return []


R = TypeVar("R")
S = TypeVar("S")


class StreamedSignal(DriftSignal, Generic[R, S]):
    """A signal whose traffic side is statistics that merge: the monitor summarizes each chunk of rows, merges the
    summaries of a window (and of the whole log), and compares them with the reference's, prepared once."""

    @abstractmethod
    def prepare(self, inp: DriftInput) -> R:
        """What the reference contributes (reading `inp.reference` and the settings only), once per monitor."""

    @abstractmethod
    def summarize(self, traffic: Side, reference: R) -> S:
        """The statistics of some traffic rows."""

    @abstractmethod
    def merge(self, a: S, b: S) -> S: ...

    @abstractmethod
    def compare(self, inp: DriftInput, reference: R, traffic: S) -> Measurement:
        """The measurement from the merged statistics; `inp.traffic` holds a sample of the rows (for rows_behind)."""

    def measure(self, inp: DriftInput) -> Measurement:
        reference = self.prepare(inp)
        return self.compare(inp, reference, self.summarize(inp.traffic, reference))


DRIFT_SIGNALS: Registry[DriftSignal] = Registry("drift signal")


def register(cls: type[DriftSignal]) -> type[DriftSignal]:
    DRIFT_SIGNALS.add(cls.name, cls())
    return cls


def mean_draws(histogram: Counter[int], resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap means of integer values given as {value: rows}: a multinomial draw of the rows per resample,
    the same distribution as resampling the rows themselves, in memory that grows with the distinct values only."""
    values = np.array(list(histogram), float)
    counts = np.array(list(histogram.values()), float)
    n = int(counts.sum())
    return rng.multinomial(n, counts / n, size=resamples) @ values / n


def histogram_mean(histogram: Counter[int]) -> float:
    return sum(v * c for v, c in histogram.items()) / max(histogram.total(), 1)


def relative_change(reference: Counter[int], traffic: Counter[int], inp: DriftInput, salt: str) -> Measurement:
    """mean(traffic) / mean(reference) - 1 of two {value: rows} histograms, with a bootstrap interval (both
    samples resampled)."""
    rng = inp.rng(salt)
    ref_means = mean_draws(reference, inp.resamples, rng)
    new_means = mean_draws(traffic, inp.resamples, rng)
    ref_mean, new_mean = histogram_mean(reference), histogram_mean(traffic)
    with np.errstate(divide="ignore", invalid="ignore"):
        draws = new_means / ref_means - 1
        value = float(np.float64(new_mean) / ref_mean - 1)
    low, high = percentile_interval(draws, inp.confidence)
    return Measurement(value, low, high, evidence=f"mean {new_mean:.1f} words against {ref_mean:.1f}")
