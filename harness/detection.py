"""The detection stage: a task's hallucination detector over every candidate's answers, with the findings
kept in detections/<candidate>/<task>.jsonl (evidence for the dashboard, and no second pass of a model
detector when a run is gated or re-scored). A finding is reused while the answer and the detector are
unchanged."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from harness.backends.base import Completion
from harness.config import DetectorSpec, TaskSpec
from harness.data import Example
from harness.detectors import Detector, Finding, describe, make_detector
from harness.metrics.base import ScoringInput
from harness.metrics.hallucination import claims_of
from harness.store import RunDir, write_jsonl

DETECTED_METRICS = frozenset({"hallucination_rate", "abstention_rate"})


def needs_detector(task: TaskSpec) -> bool:
    return task.source is not None and bool(DETECTED_METRICS & set(task.metrics))


class Detectors:
    """Loads each detector once per run (a model detector is expensive) and closes them all."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self._loaded: dict[str, Detector] = {}

    def get(self, spec: DetectorSpec) -> Detector:
        key = spec.model_dump_json()
        if key not in self._loaded:
            self._loaded[key] = make_detector(spec, self.say)
        return self._loaded[key]

    def close(self) -> None:
        for detector in self._loaded.values():
            detector.close()


def _read(path: os.PathLike[str]) -> dict[str, dict[str, Any]]:
    out = {}
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    record = json.loads(line)
                    out[record["example_id"]] = record
    except FileNotFoundError:
        return {}
    except (json.JSONDecodeError, KeyError):
        return {}  # a damaged file is recomputed, not trusted
    return out


def task_findings(run: RunDir, task: TaskSpec, spec: DetectorSpec, examples: list[Example],
                  completions: dict[str, list[Completion]], detectors: Detectors) -> dict[str, list[Finding]]:
    """Findings per candidate, aligned with the examples; computes only what the files do not hold."""
    detector_key = json.dumps(describe(spec), sort_keys=True)
    out = {}
    for cand, comps in completions.items():
        path = run.detections_file(cand, task.name)
        claims = claims_of(ScoringInput(task, examples, comps, None))
        known = _read(path)
        findings: list[Finding | None] = []
        for ex, claim in zip(examples, claims, strict=True):
            record = known.get(ex.id)
            fresh = record and record.get("answer") == claim.answer and record.get("detector") == detector_key
            findings.append(Finding.from_dict(record["finding"]) if fresh else None)
        missing = [i for i, f in enumerate(findings) if f is None]
        if missing:
            for i, f in zip(missing, detectors.get(spec).detect([claims[i] for i in missing]), strict=True):
                findings[i] = f
            write_jsonl(path, ({"example_id": ex.id, "answer": c.answer, "detector": detector_key,
                                "finding": f.to_dict()} for ex, c, f in zip(examples, claims, findings, strict=True)
                               if f is not None))
        out[cand] = [f for f in findings if f is not None]
    return out

