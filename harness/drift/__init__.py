"""Drift signals, one module per side of the model; importing this package registers them all by name."""

from harness.drift import inputs, outputs
from harness.drift.base import DRIFT_SIGNALS, DriftInput, DriftSignal, Measurement, Side, register

__all__ = ["DRIFT_SIGNALS", "DriftInput", "DriftSignal", "Measurement", "Side", "inputs", "outputs", "register"]
