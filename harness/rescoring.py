"""`harness rescore`: a finished run's answers scored again under a changed suite (new metrics, detectors, judges)
or manifest, without generating. What it checks first: the suite asks the same candidates the same questions on the
same data as the run did, so that the answers it scores are answers to what the suite says."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from harness.config import Candidate
from harness.errors import HarnessError
from harness.manifest_check import load_manifest
from harness.plan import FINISHED, RunPlan, check_manifest, make_plan, tasks_of_run
from harness.run_record import RunRecord
from harness.snapshots import manifest_of, suite_of
from harness.store import RunDir


def asked(run_plan: RunPlan) -> dict[str, dict[str, str]]:
    """Per candidate and task, a digest of every request it is asked (ids, rendered prompts, generation settings):
    run.json keeps it so that a rescore can tell whether a changed suite still asks what the answers answer."""
    out: dict[str, dict[str, str]] = {}
    for cand in run_plan.suite.candidates:
        for task in (t for t in run_plan.tasks if cand.runs(t.name)):
            rows = [[r.example_id, r.messages, r.prompt, r.max_new_tokens, r.temperature, list(r.stop)]
                    for r in run_plan.requests(task, cand)]
            blob = json.dumps(rows, sort_keys=True, ensure_ascii=False).encode()
            out.setdefault(cand.name, {})[task.name] = hashlib.sha256(blob).hexdigest()
    return out


def source_of(run_dir: Path) -> tuple[RunDir, RunRecord]:
    """The finished run to rescore."""
    source = RunDir(run_dir)
    if not source.exists():
        raise HarnessError(f"{run_dir}: not a run directory (no run.json)")
    record = source.read_run()
    if record.status not in FINISHED:
        raise HarnessError(f"{run_dir}: the run has not finished (status {record.status!r}); rescore it once "
                           "`harness run --resume` has completed it")
    return source, record


def rescore_plan(source: RunDir, record: RunRecord, suite_file: Path | None, manifest_file: Path | None) -> RunPlan:
    """The plan to score the run's answers by: the changed suite's, checked against the run, or the run's own."""
    if suite_file is not None:
        run_plan = make_plan(suite_file, manifest_file, record.in_process)
        check_matches(run_plan, record, source)
        return run_plan
    _, suite, tasks = tasks_of_run(source)
    manifest = load_manifest(manifest_file) if manifest_file else manifest_of(record, source.run_json)
    if manifest is not None:
        check_manifest(manifest, manifest_file or source.run_json, suite, tasks)
    return RunPlan(suite, Path(record.suite_file), tasks, record.suite_sha256, manifest, in_process=record.in_process)


def _answering(cand: Candidate) -> dict[str, Any]:
    """What decides a candidate's answers, beside its prompts (compared through the requests' digest)."""
    return {"model": cand.model, "adapter": cand.adapter,
            "finetune": cand.finetune.model_dump(mode="json") if cand.finetune else None,
            "settings": cand.options.answer_settings()}


def _differing(now: dict[str, Any], before: dict[str, Any], prefix: str = "") -> list[str]:
    """The settings (dotted where nested) whose values differ between two dumps of a candidate's options."""
    out = []
    for name in sorted(now.keys() | before.keys()):
        if isinstance(now.get(name), dict) and isinstance(before.get(name), dict):
            out += _differing(now[name], before[name], f"{prefix}{name}.")
        elif now.get(name) != before.get(name):
            out.append(prefix + name)
    return out


def check_matches(run_plan: RunPlan, record: RunRecord, source: RunDir) -> None:
    """One line, exit 2, where the suite's tasks, candidates, data or requests are not those of the run's answers."""
    def refuse(what: str) -> HarnessError:
        return HarnessError(f"{run_plan.suite_file}: {what} than run {source.path}, whose answers a rescore scores "
                            "(`harness run` generates answers for a changed suite)")

    ran = suite_of(record, source.run_json)
    pairs = {(c.name, t.name) for t in run_plan.tasks for c in run_plan.suite.candidates_of(t.name)}
    before = {(c.name, t) for t in record.tasks for c in ran.candidates_of(t)}
    if pairs != before:
        new, gone = sorted(pairs - before), sorted(before - pairs)
        listed = ", ".join([f"+{c} on {t}" for c, t in new] + [f"-{c} on {t}" for c, t in gone])
        raise refuse(f"other candidates or tasks ({listed})")
    for task in run_plan.tasks:
        if record.tasks[task.name].data_sha256 != task.data.files or record.tasks[task.name].n_test != len(
                task.data.test):
            raise refuse(f"other test data for task {task.name}")
    for cand in run_plan.suite.candidates:
        if _answering(cand) != _answering(ran.candidate(cand.name)):
            raise refuse(f"another model, adapter, fine-tune or backend setting for candidate {cand.name}")
        # The run's latency figures are kept: they are this suite's only if it is served as the run was.
        speed = _differing(cand.options.model_dump(mode="json"),
                           ran.candidate(cand.name).options.model_dump(mode="json"))
        if speed:
            raise refuse(f"other speed settings ({', '.join(speed)}) for candidate {cand.name}")
    digests = asked(run_plan)
    for cand_name, per_task in record.requests_sha256.items():
        for task_name, digest in per_task.items():
            if digests.get(cand_name, {}).get(task_name) != digest:
                raise refuse(f"other prompts or generation settings for {cand_name} on {task_name}")
    for cand_name, task_name in sorted(pairs):
        ids = {ex.id for ex in next(t for t in run_plan.tasks if t.name == task_name).data.test}
        missing = ids - set(source.answers(cand_name, task_name))
        if missing:
            raise refuse(f"examples without an answer ({len(missing)} of {cand_name} on {task_name})")
