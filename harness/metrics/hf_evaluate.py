"""Metrics from Hugging Face `evaluate` modules (a team's own, or the hub's), with our intervals and paired tests.

Per-example modules score each answer alone and the metric is their mean. Corpus-level modules (BLEU-like,
where the score of a set is not the mean of its items) are recomputed on resamples: on the first
`max_resamples` of the suite's resamples (each is a full compute() call), the rest left out of the interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.config import EvaluateMetricSpec, TaskSpec
from harness.errors import ConfigError, first_line
from harness.metrics.base import Metric, Need, ScoringInput
from harness.metrics.classification import parse_label
from harness.records import Resample


@dataclass(frozen=True, kw_only=True)
class EvaluateMetric(Metric):
    """A task's metric computed by an `evaluate` module (`module`, loaded at plan time; `key`: its result to use)."""

    spec: EvaluateMetricSpec
    module: Any
    key: str
    source: str = ""  # what `evaluate.load` was given (a resolved local path, or a hub id)
    family: str = "evaluate"
    value_range: tuple[float, float] = (-math.inf, math.inf)  # a module's own scale, unknown here
    needs: frozenset[Need] = frozenset({"reference"})

    @property
    def note(self) -> str | None:
        if self.spec.per_example:
            return None
        return (f"{self.name} is corpus-level: recomputed on up to {self.spec.max_resamples} bootstrap resamples "
                "per candidate (max_resamples), one compute() call each")

    def __reduce__(self) -> tuple[Any, ...]:
        # A loaded module holds locks and cannot be pickled (the dashboard's cache pickles a run's metrics): a copy
        # loads its module again from where this one was loaded.
        return _reloaded, (self.spec, self.source, self.key)

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
        """Per-example: (value, 1), (0, 0) where the module gave none. Corpus-level: each row's (prediction,
        reference) itself, as objects, for `aggregate` to recompute the module on any resample of them."""
        predictions, references = self.inputs(data)
        if self.spec.per_example:
            values = np.array([self.compute([p], [r]) for p, r in zip(predictions, references, strict=True)], float)
            valid = ~np.isnan(values)
            return np.stack([np.where(valid, values, 0.0), valid.astype(float)], axis=1)
        rows = np.empty((len(predictions), 2), dtype=object)
        for i, (prediction, reference) in enumerate(zip(predictions, references, strict=True)):
            rows[i, 0], rows[i, 1] = prediction, reference  # one by one: a reference may be a list (`all`)
        return rows

    def aggregate(self, stats: np.ndarray, sample: Resample) -> np.ndarray:
        if self.spec.per_example:
            sums = sample.counts @ stats
            with np.errstate(invalid="ignore", divide="ignore"):
                return sums[:, 0] / sums[:, 1]
        out = np.full(sample.size, np.nan)
        if len(stats) == 0:
            return out
        # The first `max_resamples` of the series only: each is a full compute() call.
        for b in range(min(sample.size, self.spec.max_resamples - sample.first)):
            picked = stats[sample.idx[b]]
            out[b] = self.compute(list(picked[:, 0]), list(picked[:, 1]))
        return out

    def per_example(self, stats: np.ndarray) -> np.ndarray | None:
        if not self.spec.per_example:
            return None
        return np.where(stats[:, 1] > 0, stats[:, 0], np.nan)

    def worst_case(self, stats: np.ndarray, failed: np.ndarray) -> None:
        """Unknown: a module's scale is its own (the worst value an answer got is not the worst it could get), and a
        corpus-level module has no per-answer value. Any failure makes a criterion insufficient."""
        return None


def evaluate_metric(spec: EvaluateMetricSpec, task: TaskSpec, where: str) -> EvaluateMetric:
    """Load the module and check it computes on one of the task's references; any problem is a ConfigError naming
    the task file and `metrics.N.…`."""
    import evaluate

    local = task.base_dir / spec.evaluate
    ref = str(local.resolve()) if local.exists() else spec.evaluate
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
    return EvaluateMetric(name=spec.name, higher_is_better=spec.higher_is_better, spec=spec, module=module, key=key,
                          source=ref)


def _reloaded(spec: EvaluateMetricSpec, source: str, key: str) -> EvaluateMetric:
    import evaluate

    return EvaluateMetric(name=spec.name, higher_is_better=spec.higher_is_better, spec=spec,
                          module=evaluate.load(source), key=key, source=source)

