"""The detector interface: claims in (an answer with the passage that should support it), findings out.

A detector decides per answer whether it asserts something its source does not support, and says why
(the unsupported spans), so that rates can be audited example by example. Detectors are registered by
name in `harness.detectors` and chosen per task in the suite (`detector:`); each carries a version that
goes into run.json.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from harness.config import DetectorSpec


@dataclass(frozen=True)
class Claim:
    answer: str
    source: str                      # the passage that should support the answer
    question: str = ""
    references: tuple[str, ...] = ()  # reference answers count as support too


@dataclass(frozen=True)
class Finding:
    hallucinated: bool
    abstained: bool = False
    spans: tuple[str, ...] = ()      # the unsupported words, sentences or span the judge named
    score: float | None = None       # the detector's own confidence that the answer is hallucinated
    raw: str | None = None           # a judge's raw output
    error: str | None = None         # why there is no real verdict (counted as not hallucinated)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        return cls(**{**data, "spans": tuple(data.get("spans", ()))})


class Detector(ABC):
    name: ClassVar[str]
    version: ClassVar[str]

    @classmethod
    @abstractmethod
    def from_spec(cls, spec: DetectorSpec, say: Callable[[str], None]) -> Detector:
        """The detector the suite asked for (loads its model, if any)."""

    @abstractmethod
    def detect(self, claims: list[Claim]) -> list[Finding]:
        """One finding per claim, in order."""

    def describe(self) -> dict[str, Any]:
        """Name, version and settings, for run.json."""
        return {"name": self.name, "version": self.version}

    def close(self) -> None:  # noqa: B027 (most detectors hold nothing to release)
        """Release models or connections."""
