"""`harness run`, `harness gate` and `harness export`: a suite to a scored, gated run directory, a run's verdicts
again with the ratings and labels saved since, and a finished run to MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from harness.cli_console import err, out
from harness.errors import HarnessError, first_line

if TYPE_CHECKING:
    from harness.config import TrackingSpec


def run(
    suite: Path = typer.Argument(..., help="suite YAML file"),
    results: Path = typer.Option(Path("results"), "--results", help="directory that holds run directories"),
    run_id: str = typer.Option(None, "--run-id", help="name of the run directory (default: time and suite)"),
    resume: bool = typer.Option(False, "--resume", help="continue an unfinished run, skipping finished examples"),
    manifest: Path = typer.Option(None, "--manifest", help="success criteria (default: the suite's own)"),
    track: bool = typer.Option(False, "--track", help="log the run to MLflow (default store: RESULTS/mlflow/)"),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help="MLflow tracking URI (implies --track)"),
    in_process: bool = typer.Option(False, "--in-process", help="generate with transformers in this process "
                                    "instead of starting vLLM servers (machines where vLLM does not install)"),
    rehearse: bool = typer.Option(False, "--rehearse", help="rehearse a GPU suite on this CPU: each model replaced "
                                  "by an embedded stand-in, the same servers, fine-tune launcher and manifest"),
    sample: int = typer.Option(None, "--sample", min=1, help="a seeded sample of at most this many test examples "
                               "per task (with --rehearse, default: the manifest's min_examples)"),
    no_cache: bool = typer.Option(False, "--no-cache", help="generate every answer, neither reading nor writing the "
                                  "results folder's generation cache (latency measured on every request)"),
) -> None:
    """Run every candidate on every task, score, gate, and write the run directory.

    Exit code 0: done (and every criterion passes; a rehearsal: done, whatever its stand-ins' verdict); 1: a
    criterion fails or lacks evidence, requests failed, or MLflow logging failed (the run directory is kept);
    2: bad input."""
    from harness import report, tracking
    from harness.manifest import passed
    from harness.pipeline import Pipeline
    from harness.plan import make_plan

    run_plan = make_plan(suite, manifest, in_process, rehearse, sample)
    for note in run_plan.notes:
        err.print(f"[yellow]note[/] {note}", soft_wrap=True)
    tracked = tracking.choose(run_plan.suite.tracking, track, tracking_uri)
    if tracked is not None:
        tracking.check(tracked, results, "--tracking-uri" if tracking_uri else f"{suite}: tracking.uri")
    result = Pipeline(run_plan, results, err, manifest, use_cache=not no_cache).execute(run_id, resume)
    for table in report.terminal_tables(result.results, {t.name: t.metrics for t in run_plan.tasks}):
        out.print(table)
    if result.verdicts is not None:
        out.print(report.verdict_table(result.verdicts, bool(run_plan.rehearsal)))
    out.print(f"run directory: {result.run_dir}")
    tracking_failed = tracked is not None and not _log_to_mlflow(result.run_dir, tracked, results)
    if result.failed_requests:
        err.print(f"[red]{result.failed_requests} requests failed[/]; `harness run {suite} --resume "
                  f"--run-id {result.run_dir.name}` retries them")
        raise typer.Exit(1)
    # A rehearsal checks that the suite runs; its stand-ins' verdict gates nothing.
    if tracking_failed or (result.verdicts is not None and not passed(result.verdicts) and not run_plan.rehearsal):
        raise typer.Exit(1)


def _log_to_mlflow(run_dir: Path, spec: TrackingSpec, results: Path) -> bool:
    """Log a finished run; a failure is one line and leaves the run directory as it is."""
    from harness import tracking
    from harness.store import RunDir

    try:
        logged = tracking.log_run(RunDir(run_dir), spec, results, lambda msg: err.print(msg))
    except Exception as exc:  # any failure of the store or the network: the run itself is safe on disk
        err.print(f"[red]MLflow logging failed[/]: {first_line(exc)}; the run directory is kept, "
                  f"`harness export {run_dir}` logs it later", soft_wrap=True)
        return False
    state = "already logged, unchanged" if logged.unchanged else "logged"
    out.print(f"MLflow: {state} as run {logged.mlflow_run_id} in {logged.tracking_uri}")
    for version in logged.registered:
        out.print(f"MLflow model registry: {version}")
    return True


def export(
    run_dir: Path = typer.Argument(..., help="a finished run directory"),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help="MLflow tracking URI (default: the suite's "
                                     "`tracking.uri`, else a local store in the run's results folder)"),
    experiment: str = typer.Option(None, "--experiment", help="experiment name (default: the suite's name)"),
    register: bool = typer.Option(None, "--register/--no-register", help="register adapters when the gate passed"),
) -> None:
    """Log a run already on disk to MLflow (parameters, metrics with intervals, verdict, files, adapters)."""
    from harness import tracking
    from harness.snapshots import suite_of
    from harness.store import RunDir

    run = RunDir(run_dir)
    if not run.exists():
        raise HarnessError(f"{run_dir}: not a run directory (no run.json)")
    spec = tracking.choose(suite_of(run.read_run(), run.run_json).tracking, True, tracking_uri)
    assert spec is not None
    update = {k: v for k, v in {"experiment": experiment, "register_adapters": register}.items() if v is not None}
    spec = spec.model_copy(update=update)
    tracking.check(spec, run_dir.parent, "--tracking-uri" if tracking_uri else f"{run.run_json}: tracking.uri")
    if not _log_to_mlflow(run_dir, spec, run_dir.parent):
        raise typer.Exit(1)


def rescore(
    run_dir: Path = typer.Argument(..., help="a finished run directory"),
    suite: Path = typer.Option(None, "--suite", help="the changed suite (new metrics, detectors, judges); its tasks, "
                               "candidates and prompts must be the run's (default: the run's own)"),
    manifest: Path = typer.Option(None, "--manifest", help="success criteria (default: the suite's, else the run's)"),
    run_id: str = typer.Option(None, "--run-id", help="name of the new run directory (default: time, suite, rescore)"),
) -> None:
    """Score a finished run's answers again, without generating, into a new run directory beside it that names its
    source in run.json. Exit codes as `harness run`."""
    from harness import report
    from harness.manifest import passed
    from harness.pipeline import rescore as rescore_run

    result = rescore_run(run_dir, suite, manifest, run_id, err)
    for table in report.terminal_tables(result.results, result.known):
        out.print(table)
    if result.verdicts is not None:
        out.print(report.verdict_table(result.verdicts))
    out.print(f"run directory: {result.run_dir}")
    if result.failed_requests or (result.verdicts is not None and not passed(result.verdicts)):
        raise typer.Exit(1)


def gate(
    run_dir: Path = typer.Argument(..., help="a run directory"),
    manifest: Path = typer.Option(None, "--manifest", help="success criteria (default: the run's own)"),
) -> None:
    """Verdicts for an existing run with the ratings and labels saved since: writes verdict.json, the metrics (the
    corrected ones too) and report.md again; exit 0 all pass, 1 a fail or insufficient, 2 bad input."""
    from harness import report
    from harness.manifest import passed
    from harness.pipeline import regate
    from harness.records import Correction
    from harness.store import RunDir

    verdicts, record = regate(run_dir, manifest)
    corrections = [Correction.from_dict(row) for row in RunDir(run_dir).read_corrections()]
    if any(c.labels for c in corrections):
        out.print(report.correction_table(corrections))
    out.print(report.verdict_table(verdicts))
    for cand, tasks in record["failed_requests"].items():
        for task, ids in tasks.items():
            err.print(f"{len(ids)} failed requests of {cand} on {task} (verdict.json lists them); "
                      "`harness run --resume` retries them", markup=False, highlight=False)
    if not passed(verdicts):
        raise typer.Exit(1)
