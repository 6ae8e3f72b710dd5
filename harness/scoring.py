"""Scores a task for all candidates at once: per-example statistics, bootstrap draws shared across
candidates (so every comparison is paired), intervals, paired differences and per-example rows."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np

from harness.config import TaskSpec
from harness.metrics import ScoringInput, TaskMetrics
from harness.metrics.classification import parse_label
from harness.records import Comparison, Completion, Example, Finding, Judgement, MetricResult
from harness.stats import Interval, PairedDifference, difference_of_intervals, paired_difference, task_seed
from harness.stats import draws as bootstrap_draws
from harness.stats import interval as interval_of


@dataclass
class TaskEvidence:
    """Everything needed for intervals, comparisons and verdicts on one task."""

    task: TaskSpec
    examples: list[Example]
    labels: list[str] | None
    completions: dict[str, list[Completion]]  # candidate -> aligned with examples
    resamples: int
    seed: int
    findings: dict[str, list[Finding]] = field(default_factory=dict)  # candidate -> hallucination findings
    judgements: dict[str, dict[str, list[Judgement]]] = field(default_factory=dict)  # candidate -> judge metric ->
    # A candidate whose failed requests and missing machine verdicts count at each metric's worst (the gate's and
    # the monitor's view); metrics that cannot say what their worst is, where such rows exist, land in `no_worst`.
    worst_for: str | None = None
    best_for: str | None = None  # a baseline whose missing machine verdicts count at each metric's best
    # Whether the criterion decided on this evidence needs high values to pass (None: count at each metric's worst).
    needs_high: bool | None = None
    no_worst: set[str] = field(default_factory=set)
    metrics: TaskMetrics = field(kw_only=True)  # what the task's metric names mean (its own ones included)
    _stats: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    _draws: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.examples)

    @property
    def candidates(self) -> list[str]:
        return list(self.completions)

    def stats(self, metric: str) -> dict[str, np.ndarray]:
        if metric not in self._stats:
            m = self.metrics[metric]
            self._stats[metric] = {
                cand: m.stats(ScoringInput(self.task, self.examples, comps, self.labels, self.findings.get(cand),
                                           self.judgements.get(cand)))
                for cand, comps in self.completions.items()
            }
            # A criterion that passes on low values of a metric where high is good (at_most on a rate of right
            # answers) is helped by a worst case: its candidate's missing rows go to the metric's best instead.
            against = m.worst_case if self.needs_high in (None, m.higher_is_better) else m.best_case
            for name, counted in ((self.worst_for, against), (self.best_for, m.best_case)):
                missing = self.missing(metric, name) if name is not None else None
                if name is None or missing is None or not missing.any():
                    continue
                changed = counted(self._stats[metric][name], missing)
                if changed is None:
                    self.no_worst.add(metric)
                else:
                    self._stats[metric][name] = changed
        return self._stats[metric]

    def missing(self, metric: str, candidate: str) -> np.ndarray:
        """Per example: whether the candidate's request failed or the machine verdict behind the metric is missing."""
        out = np.array([not c.ok for c in self.completions[candidate]], bool)
        companion = self.metrics[metric].unparsed
        if companion is not None:
            per = self.metrics[companion].per_example(self.stats(companion)[candidate])
            if per is not None:
                out |= per == 1
        return out

    def count(self, metric: str, candidate: str) -> int:
        """How many examples of the candidate have a value of the metric (unparsed verdicts have none)."""
        return self.metrics[metric].count(self.stats(metric)[candidate])

    def failed(self, candidate: str) -> list[str]:
        """The examples whose request failed for the candidate."""
        return [ex.id for ex, c in zip(self.examples, self.completions[candidate], strict=True) if not c.ok]

    def reused(self, candidate: str) -> list[str]:
        """The examples whose answer came from the generation cache (timed by another run, not this one)."""
        return [ex.id for ex, c in zip(self.examples, self.completions[candidate], strict=True)
                if c.cached_from is not None]

    def counting_against(self, candidate: str, baseline: str | None = None, high: bool = True) -> TaskEvidence:
        """The evidence a criterion on `candidate` (against `baseline`) is decided on: the same examples and
        resamples, with the candidate's failed requests and missing machine verdicts at each metric's worst (a
        wrong or hallucinated answer, an infinite latency; at the metric's best where the criterion needs the value
        low on a metric where high is good, or `high` on one where low is good), and the baseline's missing
        verdicts at their best (its
        failed requests are never counted: the gate refuses to compare with them). With nothing missing it gives the
        reported figures."""
        names = [candidate] if baseline is None else [candidate, baseline]
        return TaskEvidence(self.task, self.examples, self.labels, {name: self.completions[name] for name in names},
                            self.resamples, self.seed, {n: self.findings[n] for n in names if n in self.findings},
                            {n: self.judgements[n] for n in names if n in self.judgements}, worst_for=candidate,
                            best_for=baseline, needs_high=high, metrics=self.metrics)

    def draws(self, metric: str) -> dict[str, np.ndarray]:
        """Bootstrap draws of every candidate on the same resamples (seeded by suite seed and task)."""
        if metric not in self._draws:
            self._draws[metric] = bootstrap_draws(self.metrics[metric], self.stats(metric), self.n, self.resamples,
                                                  task_seed(self.seed, self.task.name))
        return self._draws[metric]

    def interval(self, metric: str, candidate: str, confidence: float) -> Interval:
        m, stats = self.metrics[metric], self.stats(metric)[candidate]
        value = m.value(stats, self.n)
        own = m.interval(stats, confidence)
        if own is not None and not np.isnan(value):
            return Interval(value, *own)
        return interval_of(value, self.draws(metric)[candidate], confidence)

    def paired(self, metric: str, candidate: str, baseline: str, confidence: float) -> PairedDifference:
        m, stats = self.metrics[metric], self.stats(metric)
        if m.compared_by_intervals:
            # A metric whose own interval replaces the bootstrap's (a tail percentile) is compared through it too:
            # each side at 1 - alpha/2, so that both bounds hold together with the confidence asked.
            each = 1 - (1 - confidence) / 2
            return difference_of_intervals(self.interval(metric, candidate, each),
                                           self.interval(metric, baseline, each))
        d = self.draws(metric)
        return paired_difference(m, stats[candidate], stats[baseline], self.n, d[candidate], d[baseline], confidence)

    def results(self, confidence: float) -> list[MetricResult]:
        out = []
        for metric in self.metrics.names:
            higher = self.metrics[metric].higher_is_better
            for cand in self.candidates:
                iv = self.interval(metric, cand, confidence)
                out.append(MetricResult(self.task.name, cand, metric, iv.value, iv.low, iv.high, self.n, higher,
                                        confidence))
        return out

    def comparisons(self, confidence: float) -> list[Comparison]:
        """Every pair of candidates (later one against earlier one) on the task's own metrics."""
        out = []
        for baseline, cand in combinations(self.candidates, 2):
            for metric in self.metrics.listed:
                diff = self.paired(metric, cand, baseline, confidence)
                out.append(Comparison(self.task.name, metric, cand, baseline, diff.delta, diff.low, diff.high,
                                      diff.p_value, diff.test, self.n, self.metrics[metric].higher_is_better,
                                      confidence))
        return out

    def rows(self) -> list[dict[str, Any]]:
        """Per-example values of the task's metrics, for scores.jsonl."""
        out = []
        for cand, comps in self.completions.items():
            columns = {}
            for metric in self.metrics.listed:
                per = self.metrics[metric].per_example(self.stats(metric)[cand])
                if per is not None:
                    columns[metric] = per
            for i, (ex, c) in enumerate(zip(self.examples, comps, strict=True)):
                row: dict[str, Any] = {"task": self.task.name, "candidate": cand, "example_id": ex.id,
                                       "error": c.error}
                if self.labels is not None:
                    row["predicted_label"] = parse_label(c.text, self.labels) if c.ok else None
                for metric, values in columns.items():
                    v = float(values[i])
                    row[metric] = None if math.isnan(v) else v
                out.append(row)
        return out
