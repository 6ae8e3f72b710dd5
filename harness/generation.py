"""Generation: every candidate on every task it runs, resumable. Predictions are appended one line each
as they finish; on resume only the examples without a successful answer are asked again."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import TaskID as BarID

from harness import adapter_probe
from harness.backends import Backend, BackendEnv, Deployment
from harness.config import Candidate
from harness.errors import HarnessError, redact_all
from harness.generation_cache import AnswerSource, GenerationCache
from harness.plan import PlannedTask, RunPlan, check_unchanged
from harness.records import Request
from harness.run_record import AnswerCount, ProbeResult
from harness.store import ResultsDir, RunDir, new_run_id

RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def check_run_id(run_id: str | None, results: ResultsDir) -> None:
    if run_id is not None and not RUN_ID.fullmatch(run_id):
        raise HarnessError(f"--run-id {run_id!r}: a run id is a plain folder name (letters, digits, '.', '_', '-'), "
                           f"so the run stays inside {results.path}")


def manifest_name(run_plan: RunPlan, override: Path | None = None) -> str:
    """Where the plan's manifest came from, for messages: the --manifest file, the suite's manifest file, or the
    suite's inline block."""
    if override is not None:
        return str(override)
    given = run_plan.suite.manifest
    if isinstance(given, str):
        return str(Path(given) if Path(given).is_absolute() else run_plan.suite_file.parent / given)
    return f"{run_plan.suite_file}: manifest" if given is not None else "no manifest"


def open_run(results: ResultsDir, run_plan: RunPlan, run_id: str | None, resume: bool,
             manifest_file: Path | None = None) -> RunDir:
    """A new run directory, or the unfinished one to resume, whose suite and manifest must not have changed: a
    manifest written after seeing the results would become the run's own (the one promotion trusts) without new
    evidence. `manifest_file` is the --manifest given, if any (to name it)."""
    suite = run_plan.suite
    check_run_id(run_id, results)
    if resume:
        run = results.run(run_id) if run_id else results.find_resumable(suite.name)
        if run is None or not run.exists():
            raise HarnessError(f"nothing to resume in {results.path} for suite {suite.name!r}"
                               + (f" (run id {run_id})" if run_id else ""))
        record = run.read_run()
        if record.suite_sha256 != run_plan.suite_sha256:
            raise HarnessError(f"{run.path}: the suite file changed since this run started; start a new run")
        manifest = run_plan.manifest.model_dump(mode="json") if run_plan.manifest is not None else None
        if redact_all(json.loads(json.dumps(manifest))) != record.manifest:
            raise HarnessError(f"{run.path}: the manifest ({manifest_name(run_plan, manifest_file)}) differs from the "
                               "one this run was started with; resume with that one, or judge the run by another with "
                               "`harness gate RUN --manifest`")
        check_unchanged(record, run_plan.tasks, f"run {run.run_id} started")
        if record.in_process != run_plan.in_process:
            started = "with" if record.in_process else "without"
            raise HarnessError(f"{run.path}: this run was started {started} --in-process; resume it the same way")
        if bool(record.rehearsal) != bool(run_plan.rehearsal):
            started = "with" if record.rehearsal else "without"
            raise HarnessError(f"{run.path}: this run was started {started} --rehearse; resume it the same way")
        return run
    run = results.run(run_id or new_run_id(suite.name))
    if run.path.exists():
        raise HarnessError(f"{run.path} exists; pass --resume to continue it or choose another --run-id")
    run.path.mkdir(parents=True)
    return run


@dataclass
class _Work:
    candidate: Candidate
    task: PlannedTask
    pending: list[Request]
    bar: BarID
    keys: dict[str, str] = field(default_factory=dict)  # example id -> generation cache key of its answer
    source: AnswerSource | None = None  # what the keys were made of (None: no cache)


def generate(run_plan: RunPlan, run: RunDir, adapters: dict[str, Path], console: Console,
             timings: dict[str, float], probes: dict[str, ProbeResult], dtypes: dict[str, str | None],
             cache: GenerationCache | None = None, weights: dict[str, str] | None = None) -> None:
    """Generate what is missing, taking from `cache` what it holds (how each candidate's weights were identified
    into `weights`); fine-tuned candidates are served with the adapter trained for them, once probes show the
    adapter changes answers (results into `probes`; each candidate's dtype into `dtypes`)."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    candidates = run_plan.suite.candidates
    targets = [c.deployment(str(adapters[c.name]) if c.name in adapters else None) for c in candidates]
    with Progress(*columns, console=console) as progress:
        def say(msg: str) -> None:
            progress.console.print(f"  {msg}")

        todo: list[_Work] = []
        for cand, target in zip(candidates, targets, strict=True):
            source = None
            for task in (t for t in run_plan.tasks if cand.runs(t.name)):
                ids = [ex.id for ex in task.data.test]
                done = run.compact_predictions(cand.name, task.name, ids)
                bar = progress.add_task(f"{cand.name} × {task.name}", total=len(ids), completed=len(done))
                requests = run_plan.requests(task, cand)
                work = _Work(cand, task, [r for r in requests if r.example_id not in done], bar)
                if cache is not None and work.pending:
                    # Identified only where answers are missing: hashing weights costs a read of them once.
                    source = source or cache.source(target, run_plan.suite.seed, say)
                    _reuse(run, cache, source, work, progress, requests)
                todo.append(work)
            if source is not None and weights is not None:
                weights[cand.name] = source.weights

        work_of = {c.name: [w for w in todo if w.candidate is c and w.pending] for c in candidates}
        active = [(c, t) for c, t in zip(candidates, targets, strict=True) if work_of[c.name]]
        # Shared resources (one vLLM server per base model) live for the whole stage and are always released;
        # only candidates with work left count, so a resumed run starts no server it does not need.
        with BackendEnv([t for _, t in active], say, run.logs_dir) as env:
            for cand, target in active:
                t0 = time.perf_counter()
                backend = _open_checked(run_plan, cand, target, env, probes, say)
                timings[f"{cand.name}/load"] = round(time.perf_counter() - t0, 3)
                dtypes[f"{cand.name}/generate"] = backend.dtype
                _generate_candidate(run, cand, work_of[cand.name], backend, progress, timings, cache)


def _reuse(run: RunDir, cache: GenerationCache, source: AnswerSource, work: _Work, progress: Progress,
           requests: list[Request]) -> None:
    """Write the cached answers of `work`'s pending requests into the run, leaving the others pending (keyed among
    all the task's `requests`: a sample's index does not depend on which answers a resumed run still lacks)."""
    work.source = source
    keys = source.keys(requests)
    work.keys = {r.example_id: keys[r.example_id] for r in work.pending}
    found = cache.find(work.keys, work.candidate.name, work.task.name)
    if not found:
        return
    with run.prediction_writer(work.candidate.name, work.task.name) as writer:
        for completion in found.values():
            writer.append(completion)
    progress.advance(work.bar, len(found))
    work.pending = [r for r in work.pending if r.example_id not in found]


def answer_counts(run_plan: RunPlan, run: RunDir) -> dict[str, dict[str, AnswerCount]]:
    """Per candidate and task: how many of the run's answers it generated and how many it reused, from which runs."""
    out: dict[str, dict[str, AnswerCount]] = {}
    for cand in run_plan.suite.candidates:
        for task in (t for t in run_plan.tasks if cand.runs(t.name)):
            answers = run.answers(cand.name, task.name).values()
            sources = Counter(c.cached_from for c in answers if c.cached_from is not None)
            out.setdefault(cand.name, {})[task.name] = AnswerCount(
                generated=sum(c.cached_from is None for c in answers), reused=sum(sources.values()),
                from_runs=dict(sources))
    return out


def _open_checked(run_plan: RunPlan, cand: Candidate, target: Deployment, env: BackendEnv,
                  probes: dict[str, ProbeResult], say: Callable[[str], None]) -> Backend:
    """The candidate's backend; one with an adapter only once the probe shows the adapter changes answers.
    The base answers first and is closed before the adapter loads: never two copies in memory."""
    requests = adapter_probe.probe_requests(run_plan, cand) if target.adapter else []
    base_answers: dict[str, str] = {}
    if requests:
        base = cand.options.open(adapter_probe.base_of(target), env)
        try:
            base_answers = adapter_probe.answers(base, cand, requests)
        finally:
            base.close()
    backend = cand.options.open(target, env)
    if requests:
        try:
            probe = adapter_probe.judge(cand, target, base_answers, adapter_probe.answers(backend, cand, requests),
                                        requests)
        except BaseException:
            backend.close()
            raise
        probes[cand.name] = probe
        say(f"{cand.name}: the adapter changed {probe.differing} of {probe.probes} probe answers")
    return backend


def _generate_candidate(run: RunDir, cand: Candidate, mine: list[_Work], backend: Backend, progress: Progress,
                        timings: dict[str, float], cache: GenerationCache | None) -> None:
    try:
        for work in mine:
            t0 = time.perf_counter()
            with run.prediction_writer(cand.name, work.task.name) as writer:
                for completion in backend.generate(work.pending, cand.name, work.task.name):
                    if cache is not None and work.source is not None:
                        # Into the cache first: a crash before the prediction's line is written loses nothing.
                        cache.put(work.keys[completion.example_id], completion, work.source, run.run_id)
                    writer.append(completion)
                    progress.advance(work.bar)
            key = f"{cand.name}/{work.task.name}"
            timings[key] = round(timings.get(key, 0.0) + time.perf_counter() - t0, 3)
    finally:
        backend.close()
