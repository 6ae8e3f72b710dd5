"""Machine-scored metrics corrected by reviewers' labels (`<metric>_corrected`): each task's detector rates and
judge scores, on every answer, set against the labels reviewers gave a uniformly random prefix of the answers
(harness.labels), through prediction-powered inference (harness.ppi).

What counts against the candidate: an answer the machine has no value for (a failed request, no verdict) is at the
metric's worst on the machine's side, and a "cannot tell" label at its worst on the people's side; in a paired
difference the baseline's are at their best. Only labels of the answers as they are now, and only the labelled
prefix of the seeded order (a skip would make the sample no longer uniformly random), are used."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from harness.labels import Label, current_labels, label_order, labelled_prefix
from harness.metrics.base import Labelling, Metric
from harness.ppi import Agreement, PPIEstimate, Rate, agreement_with_labels, paired_ppi_difference, ppi_mean
from harness.ratings import Output, answer_sha256
from harness.records import Comparison, Correction, MetricResult
from harness.scoring import TaskEvidence


def labellable(ev: TaskEvidence) -> list[str]:
    """The task's metrics reviewers can label, hence correct: listed ones whose machine says how to label."""
    return [m for m in ev.metrics.listed if ev.metrics[m].labelling() is not None]


@dataclass
class Corrections:
    """The corrected metrics of a run's tasks, from their evidence and the reviewers' labels."""

    evidence: dict[str, TaskEvidence]
    labels: dict[Output, dict[str, Label]]  # answer -> metric -> its label, of the answer as it is now
    seed: int
    # The labelled prefix per (task, metric, candidates): a criterion's p-value asks for the estimate at many levels.
    _samples: dict[tuple[str, str, tuple[str, ...]], list[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, evidence: dict[str, TaskEvidence], labels: list[Label], seed: int) -> Corrections:
        answers = {Output(task, c.example_id, cand): answer_sha256(c.text) for task, ev in evidence.items()
                   for cand, aligned in ev.completions.items() for c in aligned}
        by_answer: dict[Output, dict[str, Label]] = {}
        for metric in {lab.metric for lab in labels}:
            for out, lab in current_labels([x for x in labels if x.metric == metric], answers).items():
                by_answer.setdefault(out, {})[metric] = lab
        return cls(evidence, by_answer, seed)

    def _how(self, task: str, metric: str) -> tuple[Metric, Labelling]:
        m = self.evidence[task].metrics[metric]
        how = m.labelling()
        assert how is not None, f"{metric} is not labelled"
        return m, how

    def machine(self, task: str, metric: str, candidate: str, at: float) -> np.ndarray:
        """The machine's value of every answer, `at` where it has none (a failed request, no verdict)."""
        ev = self.evidence[task]
        per = ev.metrics[metric].per_example(ev.stats(metric)[candidate])
        assert per is not None, f"{metric} has no per-answer value"
        return np.where(np.isnan(per) | ev.missing(metric, candidate), at, per)

    def _failed(self, task: str, candidate: str) -> set[str]:
        """The examples whose request failed for the candidate: no answer to label, so at `at` on both sides."""
        return {c.example_id for c in self.evidence[task].completions[candidate] if not c.ok}

    def _label(self, task: str, metric: str, candidate: str, example_id: str) -> Label | None:
        return self.labels.get(Output(task, example_id, candidate), {}).get(metric)

    def _human(self, task: str, metric: str, candidate: str, ids: list[str], at: float) -> np.ndarray:
        """People's labels of the candidate's answers to `ids`; `at` for "cannot tell" and for a failed request
        (whatever a reviewer made of its empty answer)."""
        failed = self._failed(task, candidate)
        values = [None if ex in failed else self._label(task, metric, candidate, ex) for ex in ids]
        return np.array([at if lab is None or lab.value is None else lab.value for lab in values], float)

    def sample(self, task: str, metric: str, candidates: list[str]) -> list[str]:
        """The examples usable for these candidates together: the labelled prefix of the seeded order (a failed
        request counts as labelled, at the worst)."""
        key = (task, metric, tuple(candidates))
        if key not in self._samples:
            ev = self.evidence[task]
            order = label_order(self.seed, metric, task, (ex.id for ex in ev.examples))
            failed = {c: self._failed(task, c) for c in candidates}
            both = [ex.id for ex in ev.examples if all(ex.id in failed[c] or self._label(task, metric, c, ex.id)
                                                      is not None for c in candidates)]
            self._samples[key] = labelled_prefix(order, both)
        return self._samples[key]

    def cannot_tell(self, task: str, metric: str, candidate: str) -> int:
        found = [self._label(task, metric, candidate, ex) for ex in self.sample(task, metric, [candidate])]
        return sum(lab is not None and lab.value is None for lab in found)

    def estimate(self, task: str, metric: str, candidate: str, confidence: float,
                 unknown: float | None = None) -> PPIEstimate:
        """The candidate's corrected mean; what nobody knows (a "cannot tell", a failed request, no machine
        verdict) at `unknown`, by default the metric's worst (a criterion needing it low passes `unknown` high)."""
        m, how = self._how(task, metric)
        at = how.worst if unknown is None else unknown
        ids = self.sample(task, metric, [candidate])
        machine = self.machine(task, metric, candidate, at)
        index = _positions(self.evidence[task], ids)
        return ppi_mean(machine, machine[index], self._human(task, metric, candidate, ids, at), confidence,
                        value_range=m.value_range)

    def difference(self, task: str, metric: str, candidate: str, baseline: str, confidence: float) -> PPIEstimate:
        """candidate − baseline as people would label them, on the examples labelled for both."""
        m, how = self._how(task, metric)
        best = m.value_range[1] if how.worst == m.value_range[0] else m.value_range[0]
        ids = self.sample(task, metric, [candidate, baseline])
        index = _positions(self.evidence[task], ids)
        a, b = self.machine(task, metric, candidate, how.worst), self.machine(task, metric, baseline, best)
        return paired_ppi_difference(a, b, a[index], b[index], self._human(task, metric, candidate, ids, how.worst),
                                     self._human(task, metric, baseline, ids, best), confidence,
                                     value_range=m.value_range)

    def agreement(self, task: str, metric: str, candidate: str, confidence: float) -> Agreement | None:
        """The machine's sensitivity and specificity against the labels, for a 0/1 metric (labels people could
        tell only)."""
        _, how = self._how(task, metric)
        if {v for _, v in how.choices} != {0.0, 1.0}:
            return None
        failed = self._failed(task, candidate)
        ids = [ex for ex in self.sample(task, metric, [candidate]) if ex not in failed
               and (lab := self._label(task, metric, candidate, ex)) is not None and lab.value is not None]
        per = self.machine(task, metric, candidate, np.nan)[_positions(self.evidence[task], ids)]
        known = ~np.isnan(per)
        if not known.any():
            return None
        human = self._human(task, metric, candidate, ids, np.nan)[known]
        return agreement_with_labels(per[known], human, confidence)

    def results(self, confidence: float) -> tuple[list[Correction], list[MetricResult], list[Comparison]]:
        """Every labellable metric of every task, for every candidate (and every pair), with its labels."""
        corrections, results, comparisons = [], [], []
        for task, ev in self.evidence.items():
            for metric in labellable(ev):
                m = ev.metrics[metric]
                for cand in ev.candidates:
                    est = self.estimate(task, metric, cand, confidence)
                    agree = self.agreement(task, metric, cand, confidence)
                    corrections.append(_correction(task, metric, cand, est, self.cannot_tell(task, metric, cand),
                                                   agree))
                    if np.isfinite(est.estimate):
                        results.append(MetricResult(task, cand, f"{metric}_corrected", est.estimate, est.low,
                                                    est.high, est.n_labels, m.higher_is_better, confidence))
                for i, baseline in enumerate(ev.candidates):
                    for cand in ev.candidates[i + 1:]:
                        diff = self.difference(task, metric, cand, baseline, confidence)
                        if not np.isfinite(diff.estimate):
                            continue
                        comparisons.append(Comparison(task, f"{metric}_corrected", cand, baseline, diff.estimate,
                                                      diff.low, diff.high, float("nan"), f"PPI++ ({diff.method})",
                                                      diff.n_labels, m.higher_is_better, confidence))
        return corrections, results, comparisons


def _correction(task: str, metric: str, candidate: str, est: PPIEstimate, cannot_tell: int,
                agree: Agreement | None) -> Correction:
    def rate(r: Rate | None) -> tuple[float, float, float] | None:
        return None if r is None else (r.value, r.low, r.high)

    return Correction(task, metric, candidate, *est.raw, est.estimate, est.low, est.high, est.method, est.n_total,
                      est.n_labels, cannot_tell, est.confidence, rate(agree.sensitivity) if agree else None,
                      rate(agree.specificity) if agree else None)


def _positions(ev: TaskEvidence, ids: list[str]) -> np.ndarray:
    where = {ex.id: i for i, ex in enumerate(ev.examples)}
    return np.array([where[ex] for ex in ids], int)
