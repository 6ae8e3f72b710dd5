"""The command line: parses arguments, calls the library, sets exit codes (DESIGN.md's contract).

Bad input of any kind is one line on stderr and exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from harness.cli_cache import cache_app
from harness.cli_console import err, out
from harness.cli_plan import plan
from harness.cli_reviewers import reviewers_app
from harness.cli_run import export, gate, rescore, run
from harness.errors import HarnessError, first_line, redact
from harness.lifecycle import Interrupted

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Evaluate fine-tuned language models against their bases and big baselines, with evidence.")
models_app = typer.Typer(no_args_is_help=True, help="Embedded default models, usable offline.")
app.add_typer(models_app, name="models")
data_app = typer.Typer(no_args_is_help=True, help="Data checks before training and scoring.")
app.add_typer(data_app, name="data")
app.add_typer(reviewers_app, name="reviewers")
app.add_typer(cache_app, name="cache")
app.command("plan")(plan)
app.command("run")(run)
app.command("rescore")(rescore)
app.command("gate")(gate)
app.command("export")(export)


@models_app.command("prepare")
def models_prepare(name: str = typer.Argument(..., help="embedded model name, e.g. smollm2-135m-instruct")) -> None:
    """Make an embedded model available offline as a safetensors folder; prints its directory."""
    from harness.models import prepare

    path = prepare(name, lambda msg: err.print(msg))
    print(path)


@models_app.command("list")
def models_list() -> None:
    """The embedded models and whether they are prepared."""
    from harness.models import EMBEDDED, is_prepared, prepared_dir

    for name, spec in EMBEDDED.items():
        state = str(prepared_dir(name)) if is_prepared(prepared_dir(name)) else "not prepared"
        print(f"{name}\t{state}\t{spec.description}")


@data_app.command("check")
def data_check(suite: Path = typer.Argument(..., help="suite YAML file")) -> None:
    """Sizes, duplicates, train↔test overlap, label balance and lengths. Exit 1 on a blocking problem."""
    from harness import report
    from harness.config import load_suite
    from harness.plan import RunPlan, check_data, plan_tasks

    the_suite = load_suite(suite)
    reports = check_data(RunPlan(the_suite, suite, plan_tasks(the_suite, suite)))
    out.print(report.data_table(reports))
    for r in reports:
        for line in r.warnings:
            err.print(f"[yellow]warning[/] {r.task}: {line}")
        for line in r.blocking:
            err.print(f"[red]blocking[/] {r.task}: {line} (a fine-tune with `decontaminate: true` drops those "
                      "rows; `allow_overlap: true` in the suite accepts them)")
    if any(r.blocking for r in reports):
        raise typer.Exit(1)


@app.command("finetune")
def finetune(
    suite: Path = typer.Argument(..., help="suite YAML file"),
    candidate: str = typer.Option(None, "--candidate", help="only this candidate"),
) -> None:
    """Train the LoRA adapters the suite asks for, into the adapter store (HARNESS_ADAPTERS, else
    ~/.cache/harness/adapters), by content hash; prints their folders."""
    from harness.finetune import finetune_all
    from harness.models import adapter_store
    from harness.plan import check_data, make_plan

    run_plan = make_plan(suite)
    if candidate is not None:
        run_plan.suite.candidate(candidate)
    adapters = finetune_all(run_plan, check_data(run_plan), adapter_store(), lambda msg: err.print(msg),
                            candidate)
    if not adapters:
        raise HarnessError(f"{suite}: no candidate has a `finetune:` block" + (f" ({candidate})" if candidate else ""))
    for name, path in adapters.items():
        out.print(f"{name}\t{path}")


def _numbers(text: str, kind: type, option: str) -> list:
    """A comma-separated list of numbers (`--concurrency 1,4,16`, `--rate 0.5,2`); bench checks their range."""
    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise HarnessError(f"{option}: expected a comma-separated list of numbers, got {text!r}") from None


@app.command("bench")
def bench(
    suite: Path = typer.Argument(..., help="suite YAML file"),
    candidate: str = typer.Option(..., "--candidate", help="the candidate to load-test (one its backend serves)"),
    concurrency: str = typer.Option("1,4,16", "--concurrency", help="concurrency levels, comma-separated"),
    rate: str = typer.Option("", "--rate", help="request rates (req/s, Poisson arrivals), comma-separated"),
    requests: int = typer.Option(64, "--requests", min=1,
                                 help="requests per level, each on a prompt no other request sends"),
    warmup: int = typer.Option(4, "--warmup", min=0,
                               help="warm-up requests per level, on prompts of their own, not counted"),
    prompts: Path = typer.Option(None, "--prompts", help="JSONL file with a `prompt` field per line"),
    random_input_len: int = typer.Option(None, "--random-input-len", min=1, help="random prompts of this many words"),
    output_len: int = typer.Option(None, "--output-len", min=1, help="fixed output length (ignores end of sequence)"),
    slo: str = typer.Option("", "--slo", help="goodput targets in ms, e.g. ttft=500,tpot=50,e2e=3000"),
    results: Path = typer.Option(Path("results"), "--results", help="directory for the bench directory"),
) -> None:
    """Latency and throughput under load: TTFT, TPOT, ITL, E2E percentiles, throughput, goodput, cost. A fine-tuned
    candidate is benched with the adapter `harness finetune` trained for it."""
    from harness import report
    from harness.bench import BenchOptions, Targets, bench_suite

    options = BenchOptions(candidate, _numbers(concurrency, int, "--concurrency"),
                           _numbers(rate, float, "--rate"), requests, warmup, prompts,
                           random_input_len, output_len, Targets.parse(slo))
    table = report.bench_table(candidate)
    out_dir, _ = bench_suite(suite, options, results, lambda msg: err.print(msg),
                             lambda level: report.add_bench_row(table, level))
    out.print(table)
    out.print(f"bench directory: {out_dir} (latency.json, latency.png, report.md)")


@app.command("compare")
def compare(
    before: Path = typer.Argument(..., help="the earlier run directory"),
    after: Path = typer.Argument(..., help="the later run directory"),
    latency: bool = typer.Option(False, "--latency", help="include latency percentiles"),
) -> None:
    """What moved between two runs beyond their intervals; exit 1 on a regression."""
    from harness import report
    from harness.compare import compare_runs, has_regression

    changes = compare_runs(before, after, latency)
    out.print(report.changes_table(changes, before.name, after.name))
    if has_regression(changes):
        raise typer.Exit(1)


@app.command("monitor")
def monitor(
    logs: Path = typer.Argument(..., help="production traffic, JSONL (README: Monitoring)"),
    against: Path = typer.Option(..., "--against", help="a finished run directory, or a suite YAML file"),
    task: str = typer.Option(None, "--task", help="the task the traffic is for (default: the only one)"),
    candidate: str = typer.Option(None, "--candidate", help="the deployed candidate (a run's predictions)"),
    manifest: Path = typer.Option(None, "--manifest", help="`monitor:` rules (default: the run's or suite's)"),
    skip_bad_lines: bool = typer.Option(False, "--skip-bad-lines", help="count bad lines instead of stopping"),
    export_labelled: Path = typer.Option(None, "--export-labelled",
                                         help="write rows with a reference (feedback) as task data, CSV or JSONL"),
    results: Path = typer.Option(Path("results"), "--results", help="the report goes to RESULTS/monitors/"),
) -> None:
    """Drift and quality of deployed traffic per window, against the reference data.

    Exit code 0: every rule holds; 1: an alert, a rule the evidence cannot settle, or skipped lines; 2: bad input."""
    from harness import report
    from harness.monitor import monitor as run_monitor
    from harness.monitor import write_labelled
    from harness.store import ResultsDir

    result = run_monitor(logs, against, task, candidate, manifest, skip_bad_lines, lambda msg: err.print(msg))
    for table in report.monitor_tables(result):
        out.print(table)
    folder = ResultsDir(results).new_monitor(result.task)
    folder.write(result.to_dict(), report.monitor_markdown(result))
    out.print(f"monitor report: {folder.path}")
    if export_labelled is not None:
        n = write_labelled(result, export_labelled)
        out.print(f"{n} labelled rows written to {export_labelled}")
    if result.broken:
        err.print(f"[red]{len(result.broken)} broken lines skipped[/] (first: {result.broken[0]})")
    if result.alerting:
        raise typer.Exit(1)


@app.command("validate-detector")
def validate_detector(
    data: Path = typer.Argument(None, help="a HaluEval folder (qa_*_data.jsonl, general_data.jsonl); default: "
                                           "the copy shipped in data/halueval"),
    detector: str = typer.Option("grounding", "--detector", help="a registered detector (grounding, nli, judge, …)"),
    model: str = typer.Option(None, "--model", help="the detector's model (nli: entailment; judge: judging model)"),
    url: str = typer.Option(None, "--url", help="the detector's server (judge: OpenAI-compatible)"),
    sets: list[str] = typer.Option([], "--set", help="FIELD=VALUE: any setting of the detector, as its `detector:` "
                                   "block would have it (e.g. tolerance=0.2); repeatable"),
    general: bool = typer.Option(True, "--general/--no-general", help="also score general_data.jsonl"),
    limit: int = typer.Option(None, "--limit", min=1,
                              help="a seeded sample of this many answers per set (quick checks)"),
    resamples: int = typer.Option(2000, "--resamples", min=100, help="bootstrap resamples of each interval"),
    tune: str = typer.Option(None, "--tune", help="FIELD=V1,V2,...: choose the detector's FIELD by "
                                                  "cross-validation across the length-matched questions; "
                                                  "report it held out"),
    folds: int = typer.Option(5, "--folds", min=2, help="folds for --tune"),
    json_out: Path = typer.Option(None, "--json", help="write the report as JSON here"),
) -> None:
    """Agreement of a hallucination detector with human labels, beside trivial baselines, with intervals."""
    import json
    from dataclasses import asdict

    from harness import report
    from harness.detection import detector_settings, open_detector, tuning_grid
    from harness.detectors.tuning import cross_validate
    from harness.detectors.validation import DEFAULT_DATA, load_qa, validate

    data = data or DEFAULT_DATA
    # --model and --url as given (a detector that takes neither says so), then every --set.
    settings = detector_settings(detector, model, url, sets)
    grid = tuning_grid(tune, detector) if tune else None
    the_detector = open_detector(settings, "validate-detector", err.print)
    try:
        result = validate(the_detector, data, resamples=resamples, limit=limit, include_general=general,
                          progress=err.print)
    finally:
        the_detector.close()
    tuned = None
    if grid:
        field, values = grid
        # Tuned on the length-matched pairs: on the whole QA set a stricter setting also catches the longer
        # (hallucinated) answers, the length trap again.
        _, matched = load_qa(data)
        tuned = cross_validate(lambda v: open_detector({**settings, field: v}, f"--tune {field}", err.print),
                               field, values, matched, {"qa length-matched": matched},
                               f"{the_detector.name} v{the_detector.version}", folds=folds, resamples=resamples,
                               progress=err.print)
    for table in report.validation_tables(result, tuned):
        out.print(table)
    if json_out:
        record = {**result.to_dict(), "cross_validation": asdict(tuned) if tuned else None}
        json_out.write_text(json.dumps(record, indent=2))


@app.command("dashboard")
def dashboard(
    results: Path = typer.Option(Path("results"), "--results", help="the results folder (runs and ratings)"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to bind; 0.0.0.0 exposes it to the network"),
    port: int = typer.Option(8501, "--port"),
) -> None:
    """The review dashboard (Streamlit): comparisons, examples, latency, reviewer ratings."""
    import importlib.util
    import os

    from harness.ratings import accounts, is_loopback

    if not is_loopback(host) and not accounts(results):
        raise HarnessError(f"--host {host}: beyond this machine the Review page takes ratings only from reviewer "
                           f"accounts, and {results} has none; add them with `harness reviewers add NAME --results "
                           f"{results}`")
    found = importlib.util.find_spec("dashboard")
    if found is None or found.origin is None:
        raise HarnessError("the dashboard package is not installed (pip install -e .)")
    app_file = Path(found.origin).parent / "app.py"
    cmd = [sys.executable, "-m", "streamlit", "run", str(app_file), "--server.address", host, "--server.port",
           str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--client.toolbarMode", "viewer"]
    err.print(f"dashboard on http://{host}:{port} for {results.resolve()}")
    # Become the Streamlit server (no child left behind when this process is stopped).
    os.execve(sys.executable, cmd, {**os.environ, "HARNESS_RESULTS": str(results.resolve())})


def main() -> None:
    """Every failure of the user's input is one line on stderr and exit code 2: bad files and settings
    (HarnessError), usage (a missing argument, an unknown option), and paths the system refuses."""
    try:  # Typer 0.29 carries its own copy of click, whose usage errors are not click's
        from typer._click import exceptions as click_errors
    except ImportError:
        from click import exceptions as click_errors  # type: ignore[no-redef]

    try:
        code = app(standalone_mode=False)
    except HarnessError as exc:
        _fail(str(exc))
    except click_errors.NoArgsIsHelpError as exc:
        print(exc.ctx.get_help() if exc.ctx else exc.format_message(), file=sys.stderr)
        sys.exit(2)
    except click_errors.ClickException as exc:
        command = exc.ctx.command_path if getattr(exc, "ctx", None) else "harness"  # type: ignore[attr-defined]
        _fail(f"{command}: {exc.format_message()} (see `{command} --help`)")
    except OSError as exc:  # a results folder under a file, a read-only disk: the path is in the message
        _fail(first_line(exc))
    except Interrupted as exc:  # SIGTERM, SIGINT or SIGHUP during a run or bench: its servers are stopped by now
        exc.exit()
    except (KeyboardInterrupt, typer.Abort):
        print("interrupted: finished predictions are kept; rerun with --resume", file=sys.stderr)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str) -> None:
    print("error: " + redact(" ".join(message.split())), file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
