"""Metrics, one module per family; importing this package registers them all by name."""

from harness.metrics import classification, hallucination, latency, text
from harness.metrics.base import METRICS, Metric, ScoringInput, get_metric
from harness.metrics.latency import LATENCY_METRICS

__all__ = ["LATENCY_METRICS", "METRICS", "Metric", "ScoringInput", "classification", "get_metric",
           "hallucination", "latency", "text"]
