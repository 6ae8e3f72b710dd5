"""Metrics, one module per family; importing this package registers the built-in ones by name."""

from harness.metrics import classification, hallucination, human, latency, text
from harness.metrics.base import METRICS, Labelling, MeanOf, Metric, ScoringInput, TaskMetrics, get_metric, register
from harness.plugins import load

__all__ = ["METRICS", "Labelling", "MeanOf", "Metric", "ScoringInput", "TaskMetrics", "classification", "get_metric",
           "hallucination", "human", "latency", "register", "text"]

load("harness.metrics")  # installed packages' own, after the built-in ones
