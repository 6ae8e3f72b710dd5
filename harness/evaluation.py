"""Evaluation: from the predictions on disk to intervals, paired comparisons, per-example scores, the
latency summary and the verdict (running each task's hallucination detector on answers it has not judged
yet, and reading reviewers' ratings for the human metrics). `harness gate` is this stage on a finished run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.assignments import human_ratings
from harness.config import Candidate
from harness.correction import Corrections
from harness.detection import Detectors, task_findings
from harness.labels import run_labels
from harness.manifest import failed_requests, resolve, verdict_record
from harness.metrics import TaskMetrics
from harness.plan import PlannedTask, RunPlan, plan_from_run
from harness.ratings import Output
from harness.records import Comparison, Completion, Correction, Example, MetricResult, Verdict
from harness.rubric_judging import Judges, task_judgements
from harness.scoring import TaskEvidence
from harness.slice_scoring import SliceReport, finetune_bases, slice_report
from harness.store import RunDir


@dataclass
class Scored:
    evidence: dict[str, TaskEvidence]
    results: list[MetricResult]
    comparisons: list[Comparison]
    verdicts: list[Verdict] | None
    failed: int
    corrections: list[Correction]  # machine-scored metrics raw and corrected by reviewers' labels
    slices: SliceReport | None = None  # metrics by slice, where a task declares slicings


def score_run(run_plan: RunPlan, run: RunDir, say: Callable[[str], None] = print) -> Scored:
    """Intervals, paired comparisons and verdicts from the predictions on disk."""
    boot = run_plan.suite.bootstrap
    evidence: dict[str, TaskEvidence] = {}
    failed = 0
    detectors = Detectors(say)
    judges = Judges(run_plan.suite, say)
    try:
        for task in run_plan.tasks:
            completions = {}
            for cand in run_plan.suite.candidates_of(task.name):
                latest = run.answers(cand.name, task.name)
                aligned = [latest.get(ex.id) or _missing(ex, cand, task) for ex in task.data.test]
                failed += sum(not c.ok for c in aligned)
                completions[cand.name] = aligned
            findings = (task_findings(run, task.spec, task.ref.detector, task.data.test, completions, detectors)
                        if task.needs_detector else {})
            judgements = task_judgements(run, task.spec, task.metrics, task.data.test, completions, judges, say)
            for name in task.metric_names:
                note = task.metrics[name].note
                if note:
                    say(note)
            evidence[task.name] = TaskEvidence(task.spec, task.data.test, task.data.labels, completions,
                                               boot.resamples, run_plan.suite.seed, findings, judgements,
                                               metrics=task.metrics)
    finally:
        detectors.close()
        judges.close()
    results = [r for ev in evidence.values() for r in ev.results(boot.confidence)]
    comparisons = [c for ev in evidence.values() for c in ev.comparisons(boot.confidence)]
    corrections = Corrections.of(evidence, run_labels(run.path.parent, run.run_id), run_plan.suite.seed)
    corrected, corrected_results, corrected_comparisons = corrections.results(boot.confidence)
    partitions = {t.name: t.partitions for t in run_plan.tasks if t.partitions}
    slices = (slice_report(evidence, partitions, boot.confidence, finetune_bases(run_plan.suite)) if partitions
              else None)
    verdicts = None
    if run_plan.manifest is not None:
        # Only ratings of the answers as they are now count: a rewritten answer needs a new rating.
        answers = {Output(task, c.example_id, cand): c.text for task, ev in evidence.items()
                   for cand, aligned in ev.completions.items() for c in aligned}
        verdicts = resolve(run_plan.manifest, evidence, human_ratings(run.path.parent, run.run_id, answers),
                           corrections, partitions)
    return Scored(evidence, results + corrected_results, comparisons + corrected_comparisons, verdicts, failed,
                  corrected, slices)


def write_scored(run_plan: RunPlan, run: RunDir, scored: Scored) -> None:
    """metrics.json, comparisons.json, corrected.json, scores.jsonl, slices.json, latency.json and verdict.json."""
    run.write_metrics(scored.results)
    run.write_corrections([c.to_dict() for c in scored.corrections])
    run.write_comparisons([c.to_dict() for c in scored.comparisons])
    run.write_scores(row for ev in scored.evidence.values() for row in ev.rows())
    if scored.slices is not None:
        run.write_slices(scored.slices.to_dict())
    run.write_latency(latency_summary(scored.results, {name: ev.metrics for name, ev in scored.evidence.items()}))
    if scored.verdicts is not None and run_plan.manifest is not None:
        run.write_verdict(verdict_record(run_plan.manifest, scored.verdicts, failed_requests(scored.evidence)))


def latency_summary(results: list[MetricResult], metrics: Mapping[str, TaskMetrics]
                    ) -> dict[str, dict[str, dict[str, Any]]]:
    """Latency of the scoring requests, nested per candidate and task: {"ttft_ms": {"p50": …}, …} (`metrics`: each
    task's)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in results:
        metric = metrics[r.task][r.metric]
        if metric.series is None:
            continue
        task = out.setdefault(r.candidate, {}).setdefault(r.task, {})
        value = None if math.isnan(r.value) else r.value
        if metric.statistic is None:
            task[metric.series] = value
        else:
            task.setdefault(metric.series, {})[metric.statistic] = value
    return out


def _missing(ex: Example, cand: Candidate, task: PlannedTask) -> Completion:
    return Completion(ex.id, cand.name, task.name, "", error="no prediction recorded")


def gate(run_dir: Path, manifest_file: Path | None = None) -> tuple[list[Verdict], dict[str, Any]]:
    """Verdicts for an existing run, with the ratings and labels saved since: writes verdict.json, and the metrics
    and comparisons again (the corrected ones move with the labels)."""
    _, _, scored, record = gate_scored(run_dir, manifest_file)
    return scored.verdicts or [], record


def gate_scored(run_dir: Path, manifest_file: Path | None = None) -> tuple[RunPlan, RunDir, Scored, dict[str, Any]]:
    """`gate`, returning the plan, run and scores too (for a report written again)."""
    run_plan, run = plan_from_run(run_dir, manifest_file)
    assert run_plan.manifest is not None
    scored = score_run(run_plan, run)
    record = verdict_record(run_plan.manifest, scored.verdicts or [], failed_requests(scored.evidence))
    run.write_metrics(scored.results)
    run.write_comparisons([c.to_dict() for c in scored.comparisons])
    run.write_corrections([c.to_dict() for c in scored.corrections])
    if scored.slices is not None:
        run.write_slices(scored.slices.to_dict())
    run.write_verdict(record)
    return run_plan, run, scored, record
