"""Metrics, one module per family; importing this package registers them all by name."""

from harness.metrics import classification, hallucination, human, latency, text
from harness.metrics.base import METRICS, Metric, ScoringInput, get_metric, register, with_automatic

__all__ = ["METRICS", "Metric", "ScoringInput", "classification", "get_metric", "hallucination", "human", "latency",
           "register", "text", "with_automatic"]
