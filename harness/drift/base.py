"""The drift-signal interface and registry: a signal compares a window of production traffic with the
task's reference data and answers with a value and an interval (or a test's p-value).

A new signal is one class with `@register`; the monitor computes every registered signal whose needs the
traffic and reference meet, and a manifest's `monitor.rules` can name it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

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
    # interval: a value with a bootstrap interval, judged by at_most/at_least; test: a p-value, by p_below.
    kind: ClassVar[Literal["interval", "test"]] = "interval"
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


DRIFT_SIGNALS: Registry[DriftSignal] = Registry("drift signal")


def register(cls: type[DriftSignal]) -> type[DriftSignal]:
    DRIFT_SIGNALS.add(cls.name, cls())
    return cls


def relative_change(reference: np.ndarray, traffic: np.ndarray, inp: DriftInput, salt: str) -> Measurement:
    """mean(traffic) / mean(reference) - 1 with a bootstrap interval (both samples resampled)."""
    rng = inp.rng(salt)
    ref_means = reference[rng.integers(0, len(reference), (inp.resamples, len(reference)))].mean(axis=1)
    new_means = traffic[rng.integers(0, len(traffic), (inp.resamples, len(traffic)))].mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        draws = new_means / ref_means - 1
        value = float(traffic.mean() / reference.mean() - 1)
    low, high = percentile_interval(draws, inp.confidence)
    return Measurement(value, low, high, evidence=f"mean {traffic.mean():.1f} words against {reference.mean():.1f}")
