"""Metrics from Hugging Face `evaluate` modules (a team's own, or the hub's), with our intervals and paired tests.

Per-example modules score each answer alone and the metric is their mean. Corpus-level modules (BLEU-like,
where the score of a set is not the mean of its items) are recomputed on resamples: on the first
`max_resamples` of the suite's resamples (each is a full compute() call), the rest left out of the interval.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from harness.config import EvaluateMetricSpec, TaskSpec
from harness.errors import ConfigError, first_line
from harness.metrics.base import Metric, ScoringInput, define
from harness.metrics.classification import parse_label
from harness.records import Resample


class EvaluateMetric(Metric):
    value_range = (-math.inf, math.inf)  # a module's own scale, unknown here
    family = "evaluate"

    def __init__(self, spec: EvaluateMetricSpec, module: Any, key: str) -> None:
        self.spec, self.module, self.key = spec, module, key
        # Corpus-level: each candidate's answers, by the id stats() gives them; resamples computed per bundle.
        self._bundles: dict[int, tuple[list[Any], list[Any]]] = {}
        self._computed: dict[int, int] = {}

    @property
    def note(self) -> str | None:
        if self.spec.per_example:
            return None
        return (f"{self.name} is corpus-level: recomputed on up to {self.spec.max_resamples} bootstrap resamples "
                "per candidate (max_resamples), one compute() call each")

    def inputs(self, data: ScoringInput) -> tuple[list[Any], list[Any]]:
        if self.spec.predictions == "label" and data.labels is not None:
            predictions: list[Any] = [parse_label(t, data.labels) or "" for t in data.texts]
        else:
            predictions = [t.strip() for t in data.texts]
        if self.spec.references == "all":
            return predictions, [e.references for e in data.examples]
        return predictions, [(e.references or [""])[0] for e in data.examples]

    def compute(self, predictions: list[Any], references: list[Any]) -> float:
        result = self.module.compute(predictions=predictions, references=references, **self.spec.args)
        value = result[self.key] if isinstance(result, dict) else result
        return float(np.mean(value)) if isinstance(value, list | tuple | np.ndarray) else float(value)

    def stats(self, data: ScoringInput) -> np.ndarray:
        predictions, references = self.inputs(data)
        n = len(predictions)
        if self.spec.per_example:
            values = np.array([self.compute([p], [r]) for p, r in zip(predictions, references, strict=True)], float)
            valid = ~np.isnan(values)
            return np.stack([np.where(valid, values, 0.0), valid.astype(float)], axis=1)
        bundle = len(self._bundles)
        self._bundles[bundle] = (predictions, references)
        return np.stack([np.arange(n, dtype=float), np.full(n, float(bundle))], axis=1)

    def aggregate(self, stats: np.ndarray, sample: Resample) -> np.ndarray:
        if self.spec.per_example:
            sums = sample.counts @ stats
            with np.errstate(invalid="ignore", divide="ignore"):
                return sums[:, 0] / sums[:, 1]
        if len(stats) == 0:
            return np.full(sample.size, np.nan)
        bundle = int(stats[0, 1])
        predictions, references = self._bundles[bundle]
        rows = stats[:, 0].astype(int)
        out = np.full(sample.size, np.nan)
        identity = sample.size == 1 and np.array_equal(sample.idx[0], np.arange(len(rows)))
        for b in range(sample.size):
            if not identity and self._computed.get(bundle, 0) >= self.spec.max_resamples:
                break
            picked = rows[sample.idx[b]]
            out[b] = self.compute([predictions[i] for i in picked], [references[i] for i in picked])
            if not identity:
                self._computed[bundle] = self._computed.get(bundle, 0) + 1
        return out

    def per_example(self, stats: np.ndarray) -> np.ndarray | None:
        if not self.spec.per_example:
            return None
        return np.where(stats[:, 1] > 0, stats[:, 0], np.nan)

    def worst_case(self, stats: np.ndarray, failed: np.ndarray) -> None:
        """Unknown: a module's scale is its own (the worst value an answer got is not the worst it could get), and a
        corpus-level module has no per-answer value. Any failure makes a criterion insufficient."""
        return None


def define_evaluate(spec: EvaluateMetricSpec, task: TaskSpec, where: str) -> None:
    """Load the module, check it computes on one of the task's references, and register the metric; any problem
    is a ConfigError naming the task file and `metrics.N.…`."""
    import evaluate

    local = task.base_dir / spec.evaluate
    ref = str(local.resolve()) if local.exists() else spec.evaluate
    definition = json.dumps({"spec": spec.model_dump(mode="json"), "module": ref,
                             "sha256": _module_digest(local) if local.exists() else None}, sort_keys=True)
    try:
        module = evaluate.load(ref)
    except Exception as exc:  # the hub client, the module cache and the module's own code raise their own kinds
        hint = "" if local.exists() else " (neither a file beside the task nor, offline, in the evaluate cache)"
        raise ConfigError(task.file, f"{where}.evaluate", f"cannot load evaluate module {spec.evaluate!r}{hint}: "
                          f"{first_line(exc)}") from None
    probe = task.data.reference is not None
    key = spec.key or ""
    try:
        result = module.compute(predictions=["a"], references=[["a"] if spec.references == "all" else "a"],
                                **spec.args) if probe else {}
    except Exception as exc:  # a wrong argument surfaces here, before any generation
        raise ConfigError(task.file, f"{where}.args", f"{spec.evaluate} does not compute with these arguments: "
                          f"{first_line(exc)}") from None
    if isinstance(result, dict) and result:
        numeric = [k for k, v in result.items() if isinstance(v, int | float | list)]
        if spec.key is not None and spec.key not in result:
            raise ConfigError(task.file, f"{where}.key", f"{spec.evaluate} returns {', '.join(result)}; "
                              f"no {spec.key!r}")
        if spec.key is None:
            if len(numeric) != 1:
                raise ConfigError(task.file, f"{where}.key", f"{spec.evaluate} returns {', '.join(result)}; "
                                  "say which with `key`")
            key = numeric[0]
    metric = type(f"Evaluate_{spec.name}", (EvaluateMetric,), {
        "name": spec.name, "higher_is_better": spec.higher_is_better, "needs": frozenset({"reference"}),
    })(spec, module, key)
    if not define(metric, definition):
        raise ConfigError(task.file, f"{where}.name", f"metric name {spec.name!r} is a built-in metric's")


def _module_digest(path: Path) -> str:
    import hashlib

    files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.read_bytes())
    return digest.hexdigest()
