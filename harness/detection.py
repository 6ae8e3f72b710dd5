"""The detection stage: a task's hallucination detector over every candidate's answers, with the findings
kept in the run directory (evidence for the dashboard, and no second pass of a model detector when a run
is gated or re-scored). A finding is reused while the answer and the detector are unchanged; a failed
request (a judge's timeout) is no finding: it counts as unparsed in this scoring and is asked again next time.
Also the detector a command line asks for (`harness validate-detector`), validated as a suite's would be."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import yaml

from harness.config import TaskRef, TaskSpec
from harness.detectors import DETECTORS, Detector, DetectorOptions
from harness.errors import HarnessError
from harness.loading import validate
from harness.metrics import ScoringInput
from harness.metrics.hallucination import claims_of
from harness.records import Completion, Example, Finding
from harness.store import RunDir


class Detectors:
    """Loads each detector once per run (a model detector is expensive) and closes them all."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self._loaded: dict[str, Detector] = {}

    def get(self, spec: DetectorOptions) -> Detector:
        key = spec.model_dump_json()
        if key not in self._loaded:
            self._loaded[key] = spec.open(self.say)
        return self._loaded[key]

    def close(self) -> None:
        for detector in self._loaded.values():
            detector.close()


def task_findings(run: RunDir, task: TaskSpec, spec: DetectorOptions, examples: list[Example],
                  completions: dict[str, list[Completion]], detectors: Detectors) -> dict[str, list[Finding]]:
    """Findings per candidate, aligned with the examples; computes only what the files do not hold."""
    detector_key = json.dumps(spec.describe(), sort_keys=True)
    out = {}
    for cand, comps in completions.items():
        claims = claims_of(ScoringInput(task, examples, comps, None))
        known = run.read_detections(cand, task.name)
        findings: list[Finding | None] = []
        for ex, claim in zip(examples, claims, strict=True):
            record = known.get(ex.id)
            fresh = record and record.get("answer") == claim.answer and record.get("detector") == detector_key
            findings.append(Finding.from_dict(record["finding"]) if record and fresh else None)
        missing = [i for i, f in enumerate(findings) if f is None]
        if missing:
            for i, f in zip(missing, detectors.get(spec).detect([claims[i] for i in missing]), strict=True):
                findings[i] = f
            run.write_detections(cand, task.name, (
                {"example_id": ex.id, "answer": c.answer, "detector": detector_key, "finding": f.to_dict()}
                for ex, c, f in zip(examples, claims, findings, strict=True) if f is not None and not f.failed))
        out[cand] = [f for f in findings if f is not None]
    return out


def detector_settings(name: str, model: str | None, url: str | None, sets: list[str]) -> dict[str, Any]:
    """A `detector:` block from command-line options: `model` and `url` as given, and each `--set FIELD=VALUE` with
    VALUE read as YAML reads it (0.2 a number, true a boolean). Any detector's settings, with no option of its own
    here: a field it does not take is refused when the block is validated, as in a suite."""
    block: dict[str, Any] = {"name": name, **{k: v for k, v in {"model": model, "url": url}.items() if v is not None}}
    for item in sets:
        field, sep, text = item.partition("=")
        if not sep or not field.strip():
            raise HarnessError(f"--set {item!r}: expected FIELD=VALUE (e.g. --set tolerance=0.2)")
        if field.strip() == "name":
            raise HarnessError("--set name=…: the detector is chosen with --detector")
        try:
            block[field.strip()] = yaml.safe_load(text) if text.strip() else text
        except yaml.YAMLError:
            block[field.strip()] = text
    return block


def tuning_grid(tune: str, detector: str) -> tuple[str, tuple[float, ...]]:
    """`FIELD=V1,V2,...` (`harness validate-detector --tune`): a numeric setting of the chosen detector and at least
    two values."""
    field, _, listed = tune.partition("=")
    numeric = ({k for k, f in DETECTORS[detector].model_fields.items() if f.annotation in (float, int)}
               if detector in DETECTORS else set())
    if field not in numeric:
        raise HarnessError(f"--tune: {field!r} is not a numeric setting of detector {detector!r} "
                           f"(it has: {', '.join(sorted(numeric)) or 'none'})")
    try:
        values = tuple(dict.fromkeys(float(v) for v in listed.split(",")))
    except ValueError:
        raise HarnessError(f"--tune: {listed!r} is not a comma-separated list of numbers") from None
    if len(values) < 2:
        raise HarnessError("--tune: give at least two values to choose among")
    return field, values


def open_detector(settings: dict[str, Any], where: str, say: Callable[[str], None]) -> Detector:
    """The detector a `detector:` block names, validated as a suite's would be (errors name `where`), checked."""
    spec = validate(TaskRef, {"task": "-", "detector": settings}, where).detector
    problem = spec.problem()
    if problem:
        raise HarnessError(problem)
    return spec.open(say)
