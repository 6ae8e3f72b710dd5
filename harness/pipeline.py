"""A whole run, stage after stage: data check, fine-tunes, generation, evaluation, report. run.json
records the plan, the versions and the status at every step, and says `complete` only at the very end.
"""

from __future__ import annotations

import contextlib
import platform
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.console import Console

from harness import report
from harness.backends import BACKENDS
from harness.config import PROJECT_ROOT
from harness.data_check import TaskDataReport
from harness.detectors import DETECTORS
from harness.errors import HarnessError
from harness.evaluation import gate_scored, score_run, write_scored
from harness.finetune import finetune_all
from harness.generation import answer_counts, check_run_id, generate, open_run
from harness.generation_cache import GenerationCache
from harness.lifecycle import Interrupted, guard
from harness.metrics import TaskMetrics
from harness.models import adapter_store, native_dtype
from harness.plan import RunPlan, check_data, make_plan
from harness.plugins import LOADED as plugins_loaded
from harness.records import Comparison, MetricResult, Verdict
from harness.rescoring import asked, rescore_plan, source_of
from harness.run_record import CacheRecord, Machine, ProbeResult, RunRecord, RunStatus, TaskRecord
from harness.sources.files import file_sha256
from harness.store import SCHEMA_VERSION, ResultsDir, RunDir, new_run_id, now_iso, read_lineage

# The harness's own figures depend on these; each backend and detector declares its own (`packages`), and every
# installed plugin's package is recorded too.
VERSIONED_PACKAGES = ("harness", "numpy", "scipy", "scikit-learn", "rouge-score", "sacrebleu", "evaluate")


def package_versions() -> dict[str, str]:
    """Python's and the installed versions of the packages a run's figures depend on."""
    declared = [name for kind in (BACKENDS, DETECTORS) for options in kind.values() for name in options.packages]
    plugins = [p.distribution for p in plugins_loaded if p.distribution]
    out = {"python": platform.python_version()}
    for name in dict.fromkeys([*VERSIONED_PACKAGES, *declared, *plugins]):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_revision() -> str | None:
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
    known: dict[str, TaskMetrics] = field(default_factory=dict)  # each task's metrics, for formatting


class Pipeline:
    """One run of a plan into a results folder."""

    def __init__(self, run_plan: RunPlan, results_dir: Path, console: Console | None = None,
                 manifest_file: Path | None = None, use_cache: bool = True) -> None:
        self.plan = run_plan
        self.use_cache = use_cache  # `--no-cache`: the generation cache is neither read nor written
        self.manifest_file = manifest_file  # the --manifest given, if any: named when a resume refuses it
        self.results = ResultsDir(results_dir)
        self.console = console or Console(stderr=True)
        self.data_reports: list[TaskDataReport] = []
        self.adapters: dict[str, Path] = {}
        self.probes: dict[str, ProbeResult] = {}  # per adapter candidate: how its answers differ from its base's
        self.dtypes: dict[str, str | None] = {}  # per stage (CANDIDATE/finetune, CANDIDATE/generate)
        self.cache: CacheRecord | None = None  # once generation is done: where the answers came from
        self.rescored_from: str | None = None
        self.asked: dict[str, dict[str, str]] = {}  # per candidate and task: a digest of its requests

    def _record(self, run: RunDir, status: RunStatus, started: str, timings: dict[str, float],
                error: str | None = None, failed_requests: int | None = None) -> RunRecord:
        p = self.plan
        return RunRecord(
            schema_version=SCHEMA_VERSION,
            run_id=run.run_id,
            status=status,
            suite_name=p.suite.name,
            suite_file=str(p.suite_file),
            suite_sha256=p.suite_sha256,
            suite=p.suite.model_dump(mode="json"),
            tasks={
                t.name: TaskRecord(
                    version=t.spec.version, kind=t.spec.kind, file=str(t.spec.file),
                    task_sha256=file_sha256(t.spec.file), data_sha256=t.data.files,
                    data_revisions=t.data.revisions,
                    n_test=len(t.data.test), n_train=len(t.data.train), limit=t.ref.limit,
                    sample=t.ref.sample, metrics=t.spec.metric_names,
                    detector=t.ref.detector.describe() if t.needs_detector else None,
                ) for t in p.tasks
            },
            seed=p.suite.seed,
            bootstrap=p.suite.bootstrap.model_dump(),
            versions=package_versions(),
            machine=Machine(native_dtype=native_dtype()),
            git_revision=git_revision(),
            started_at=started,
            finished_at=now_iso() if status != "running" else None,
            timings_s=timings,
            dtypes=self.dtypes,
            in_process=p.in_process,
            rehearsal=p.rehearsal,
            manifest=p.manifest.model_dump(mode="json") if p.manifest else None,
            data_check=self.data_reports,
            adapters={name: str(path) for name, path in self.adapters.items()},
            adapter_probes=self.probes,
            prompting={cand: {task: how.record() for task, how in per_task.items()}
                       for cand, per_task in p.prompting.items()},
            failed_requests=failed_requests,
            error=error,
            cache=self.cache,
            requests_sha256=self.asked,
            rescored_from=self.rescored_from,
        )

    def _say_prompting(self) -> None:
        """How each `adapter:` candidate is prompted: one trained on another prompt scores far below what it learned."""
        for cand in self.plan.suite.candidates:
            if not cand.adapter:
                continue
            for task, how in self.plan.prompting.get(cand.name, {}).items():
                self.console.print(f"  {cand.name} × {task}: prompt from the {how.prompt}, chat template from the "
                                   f"{how.chat} ({how.why})", markup=False, highlight=False)

    def _write_failed(self, run: RunDir, started: str, timings: dict[str, float], exc: OSError) -> HarnessError:
        """A disk that fills or turns read-only mid-run: the run is marked failed where that can still be
        written (else it stays "running", which gate refuses too), and the error says how to go on."""
        error = HarnessError(f"{exc.filename or run.path}: {exc.strerror or exc}; the finished predictions are "
                             "kept: fix this and run again with --resume")
        with contextlib.suppress(OSError):
            run.write_run(self._record(run, "failed", started, timings, error=str(error)))
        return error

    def _write_interrupted(self, run: RunDir, started: str, timings: dict[str, float],
                           exc: BaseException) -> Interrupted:
        """A signal (or Ctrl-C) mid-run: the run is marked interrupted, naming the signal, and the error says how to
        complete it. The servers are stopped by then: every guard and context manager on the way out has run."""
        stopped = exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT)
        with contextlib.suppress(OSError):
            run.write_run(self._record(run, "interrupted", started, timings, error=f"stopped by {stopped.name}"))
        resume = ["harness", "run", str(self.plan.suite_file), "--resume", "--run-id", run.run_id]
        if self.results.path != Path("results"):
            resume += ["--results", str(self.results.path)]
        if self.manifest_file is not None:
            resume += ["--manifest", str(self.manifest_file)]
        if self.plan.in_process:
            resume.append("--in-process")
        stopped.message = (f"interrupted by {stopped.name}: every server the harness started is stopped and the "
                           f"finished predictions are kept in {run.path}; `{shlex.join(resume)}` completes the run")
        return stopped

    @contextlib.contextmanager
    def _stage(self, run: RunDir, started: str, timings: dict[str, float], fails: bool) -> Iterator[None]:
        """A stage once run.json exists: a signal marks the run interrupted, a disk error failed, and where `fails`
        a HarnessError failed too."""
        try:
            yield
        except (Interrupted, KeyboardInterrupt) as exc:
            raise self._write_interrupted(run, started, timings, exc) from None
        except HarnessError as exc:
            if fails:
                run.write_run(self._record(run, "failed", started, timings, error=str(exc)))
            raise
        except OSError as exc:
            raise self._write_failed(run, started, timings, exc) from None

    def _generate(self, run: RunDir, timings: dict[str, float], previous: RunRecord | None) -> None:
        """The generation stage, through the results folder's generation cache unless `--no-cache`."""
        cache = GenerationCache(self.results.generations_db) if self.use_cache else None
        weights = dict(previous.cache.weights) if previous is not None and previous.cache is not None else {}
        try:
            generate(self.plan, run, self.adapters, self.console, timings, self.probes, self.dtypes, cache, weights)
        finally:
            if cache is not None:
                cache.close()
        self.cache = CacheRecord(enabled=self.use_cache, answers=answer_counts(self.plan, run), weights=weights)
        if self.cache.reused:
            self.console.print(f"  {self.cache.reused} answers from the generation cache, {self.cache.generated} "
                               "generated (latency covers only the generated ones)")

    def execute(self, run_id: str | None = None, resume: bool = False) -> RunResult:
        """The run; SIGTERM, SIGINT and SIGHUP stop every server it started and mark it interrupted (`Interrupted`)."""
        with guard():
            return self._execute(run_id, resume)

    def _execute(self, run_id: str | None, resume: bool) -> RunResult:
        check_run_id(run_id, self.results)  # before any work: the run must stay inside the results folder
        self.data_reports = check_data(self.plan)
        # Before the run directory exists: blocked training is bad input, and adapters are cached outside runs.
        finetune_s: dict[str, float] = {}
        self.adapters = finetune_all(self.plan, self.data_reports, adapter_store(), self.console.print,
                                     timings=finetune_s)
        run = open_run(self.results, self.plan, run_id, resume, self.manifest_file)
        previous = run.read_run() if resume else None
        started = previous.started_at if previous else now_iso()
        # A resumed run keeps the first attempt's training time: reusing the adapter costs nothing.
        timings: dict[str, float] = {**finetune_s, **(previous.timings_s if previous else {})}
        self.probes = dict(previous.adapter_probes) if previous else {}
        self.dtypes = {**{f"{name}/finetune": read_lineage(path).get("dtype") for name, path in self.adapters.items()},
                       **(previous.dtypes if previous else {})}
        self.asked = asked(self.plan)
        with self._stage(run, started, timings, fails=True):
            run.write_run(self._record(run, "running", started, timings))
            self.console.print(f"[bold]run[/] {run.path}")
            self._say_prompting()
            self._generate(run, timings, previous)
        return self._score(run, started, timings)

    def rescore(self, source: RunDir, record: RunRecord, run_id: str | None = None) -> RunResult:
        """`harness rescore`: the source run's answers (with their latency, findings and judgements) scored by this
        plan into a new run directory that names its source; nothing is generated."""
        self.adapters = {name: Path(path) for name, path in record.adapters.items()}
        self.probes, self.dtypes, self.data_reports = dict(record.adapter_probes), dict(record.dtypes), list(
            record.data_check)
        self.cache, self.asked, self.rescored_from = record.cache, record.requests_sha256, record.run_id
        run = open_run(self.results, self.plan, run_id or f"{new_run_id(self.plan.suite.name)}-rescore", False,
                       self.manifest_file)
        started, timings = now_iso(), dict[str, float]()
        with self._stage(run, started, timings, fails=True):
            run.write_run(self._record(run, "running", started, timings))
            self.console.print(f"[bold]rescoring[/] {source.path} [bold]into[/] {run.path}")
            for task in self.plan.tasks:
                for cand in self.plan.suite.candidates_of(task.name):
                    run.copy_answers(source, cand.name, task.name)
        return self._score(run, started, timings)

    def _score(self, run: RunDir, started: str, timings: dict[str, float]) -> RunResult:
        """Evaluation and report of a run whose answers are all on disk; run.json says how it ended."""
        t0 = time.perf_counter()
        with self._stage(run, started, timings, fails=False):
            scored = score_run(self.plan, run, self.console.print)
            write_scored(self.plan, run, scored)
        timings["scoring"] = round(time.perf_counter() - t0, 3)
        status: RunStatus = "complete" if scored.failed == 0 else "incomplete"
        record = self._record(run, status, started, timings, failed_requests=scored.failed)
        run.write_run(record)
        costs = {c.name: c.cost_per_hour for c in self.plan.suite.candidates}
        known = {t.name: t.metrics for t in self.plan.tasks}
        run.write_report(report.markdown(record, costs, scored.results, scored.verdicts, known=known,
                                         corrections=scored.corrections, slices=scored.slices))
        return RunResult(run.path, scored.results, scored.comparisons, scored.verdicts, scored.failed, timings, known)


def regate(run_dir: Path, manifest_file: Path | None = None) -> tuple[list[Verdict], dict[str, Any]]:
    """`harness gate`: the verdicts of a finished run with the ratings and labels saved since, and its report.md
    written again (the corrected metrics and human-rated verdicts move with them)."""
    run_plan, run, scored, record = gate_scored(run_dir, manifest_file)
    costs = {c.name: c.cost_per_hour for c in run_plan.suite.candidates}
    run.write_report(report.markdown(run.read_run(), costs, scored.results, scored.verdicts,
                                     known={t.name: t.metrics for t in run_plan.tasks}, corrections=scored.corrections,
                                     slices=scored.slices))
    return scored.verdicts or [], record


def rescore(run_dir: Path, suite_file: Path | None = None, manifest_file: Path | None = None, run_id: str | None = None,
            console: Console | None = None) -> RunResult:
    """`harness rescore`: a finished run's answers scored by a changed suite (checked to ask what the run asked) or
    manifest, into a new run directory beside it."""
    source, record = source_of(run_dir)
    run_plan = rescore_plan(source, record, suite_file, manifest_file)
    with guard():
        return Pipeline(run_plan, source.path.parent, console, manifest_file).rescore(source, record, run_id)


def run_suite(suite_file: str | Path, results_dir: Path, run_id: str | None = None, resume: bool = False,
              console: Console | None = None, manifest_file: Path | None = None, use_cache: bool = True) -> RunResult:
    return Pipeline(make_plan(suite_file, manifest_file), results_dir, console, manifest_file,
                    use_cache).execute(run_id, resume)
