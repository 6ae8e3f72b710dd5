"""Drift signals, one module per side of the model; importing this package registers them all by name."""

from harness.drift import inputs, outputs
from harness.drift.base import (
                                DRIFT_SIGNALS,
                                DetailTable,
                                DriftInput,
                                DriftSignal,
                                Measurement,
                                Side,
                                StreamedSignal,
                                register,
)
from harness.plugins import load

__all__ = ["DRIFT_SIGNALS", "DetailTable", "DriftInput", "DriftSignal", "Measurement", "Side", "StreamedSignal",
           "inputs", "outputs", "register"]

load("harness.signals")  # installed packages' own, after the built-in ones
