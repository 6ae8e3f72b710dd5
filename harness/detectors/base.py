"""The detector interface: claims in (an answer with the passage that should support it), findings out.

A detector decides per answer whether it asserts something its source does not support, and says why
(the unsupported spans), so that rates can be audited example by example. Each detector is one module:
its options model (registered with `@register`, chosen per task in the suite's `detector:` by `name`)
and the Detector it opens; each carries a version that goes into run.json.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from harness.records import Claim, Finding
from harness.registry import Registry
from harness.schema import Settings

__all__ = ["DETECTORS", "Claim", "Detector", "DetectorOptions", "Finding", "register"]


class Detector(ABC):
    name: ClassVar[str]
    version: ClassVar[str]

    @abstractmethod
    def detect(self, claims: list[Claim]) -> list[Finding]:
        """One finding per claim, in order."""

    def describe(self) -> dict[str, Any]:
        """Name, version and settings, for run.json."""
        return {"name": self.name, "version": self.version}

    def close(self) -> None:  # noqa: B027 (most detectors hold nothing to release)
        """Release models or connections."""


class DetectorOptions(Settings):
    """A detector's settings in a suite's `detector:` block. Subclasses set `name: Literal["x"] = "x"`."""

    name: str
    # A model detector reads the task's source passage; the grounding rule also works from references.
    needs_source: ClassVar[bool] = True
    # The PyPI distributions its findings depend on: their installed versions go into run.json.
    packages: ClassVar[tuple[str, ...]] = ()

    @classmethod
    @abstractmethod
    def detector(cls) -> type[Detector]:
        """The Detector class these options open (for its version without loading a model)."""

    @abstractmethod
    def open(self, say: Callable[[str], None]) -> Detector:
        """The detector, its model loaded."""

    def problem(self) -> str | None:
        """Why the detector cannot run here, found before any generation starts, or None."""
        return None

    def describe(self) -> dict[str, Any]:
        """Name, version and settings, without loading a model (run.json, and the key of kept findings)."""
        settings = self.model_dump(exclude={"name", "api_key_env"}, exclude_none=True)
        return {"name": self.name, "version": self.detector().version, **settings}


DETECTORS: Registry[type[DetectorOptions]] = Registry("detector")

OptionsT = TypeVar("OptionsT", bound=DetectorOptions)


def register(cls: type[OptionsT]) -> type[OptionsT]:
    """Class decorator on a detector's options model; its `name` literal is the name suites use."""
    DETECTORS.add(cls.model_fields["name"].default, cls)
    return cls
