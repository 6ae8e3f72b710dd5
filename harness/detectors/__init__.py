"""Hallucination detectors, one module each; importing a module registers its options model by name."""

from __future__ import annotations

from collections.abc import Callable

from harness.detectors import grounding, judge, nli
from harness.detectors.base import DETECTORS, Claim, Detector, DetectorOptions, Finding, register


def make_detector(spec: DetectorOptions, say: Callable[[str], None] = print) -> Detector:
    return spec.open(say)


__all__ = ["DETECTORS", "Claim", "Detector", "DetectorOptions", "Finding", "grounding", "judge", "make_detector",
           "nli", "register"]
