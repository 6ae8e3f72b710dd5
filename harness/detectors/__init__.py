"""Hallucination detectors, one module each; importing a module registers its options model by name."""

from __future__ import annotations

from harness.detectors import grounding, hallucination_judge, nli
from harness.detectors.base import DETECTORS, Claim, Detector, DetectorOptions, Finding, register
from harness.plugins import load

__all__ = ["DETECTORS", "Claim", "Detector", "DetectorOptions", "Finding", "grounding",
           "hallucination_judge", "nli", "register"]

load("harness.detectors")  # installed packages' own, after the built-in ones
