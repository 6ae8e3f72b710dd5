"""What people read: the terminal table and report.md."""

from __future__ import annotations

import math
from collections.abc import Mapping

from rich.table import Table

from harness.bench import LevelResult, cost_per_1k, percentile_trio
from harness.compare import Change
from harness.data_check import TaskDataReport
from harness.detectors.tuning import CrossValidation
from harness.detectors.validation import MEASURES, ValidationReport
from harness.drift import DRIFT_SIGNALS, DetailTable
from harness.manifest import short
from harness.metrics import TaskMetrics
from harness.monitor import MonitorReport
from harness.records import STATUSES, Correction, MetricResult, Reading, Verdict
from harness.report_slices import slices_markdown
from harness.run_record import RunRecord
from harness.slice_scoring import SliceReport

HEADLINE_LATENCY = ("ttft_ms_p50", "e2e_ms_p50", "e2e_ms_p95", "output_tokens_per_s", "error_rate")
TERMINAL_LATENCY = ("e2e_ms_p50", "error_rate")


def fmt(value: float | None, metric: str, known: TaskMetrics = TaskMetrics()) -> str:
    """A metric's value as its declaration says to show it (BLEU and milliseconds to one decimal); `known`: the
    task's metrics, where it may define the metric itself."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return known[metric].format(value) if metric in known else f"{value:.3f}"


def level(confidence: float) -> str:
    """A confidence as people read it: 0.9 is "90%", 0.975 "97.5%"."""
    return f"{confidence * 100:.4g}%"


def fmt_ci(r: MetricResult, known: TaskMetrics = TaskMetrics()) -> str:
    return f"{fmt(r.value, r.metric, known)} [{fmt(r.ci_low, r.metric, known)}, {fmt(r.ci_high, r.metric, known)}]"


def _grouped(results: list[MetricResult]) -> dict[str, dict[str, dict[str, MetricResult]]]:
    """task -> candidate -> metric -> result, in first-seen order."""
    out: dict[str, dict[str, dict[str, MetricResult]]] = {}
    for r in results:
        out.setdefault(r.task, {}).setdefault(r.candidate, {})[r.metric] = r
    return out


def _columns(task_metrics: list[str]) -> list[str]:
    return [*task_metrics, *[m for m in HEADLINE_LATENCY if m not in task_metrics]]


def terminal_tables(results: list[MetricResult], known: Mapping[str, TaskMetrics]) -> list[Table]:
    tables = []
    for task, by_cand in _grouped(results).items():
        listed = known[task].listed
        cols = [*listed, *[m for m in TERMINAL_LATENCY if m not in listed]]
        first = next(iter(next(iter(by_cand.values())).values()))
        table = Table(title=f"{task} (n={first.n}, {level(first.confidence)} bootstrap intervals)",
                      title_justify="left")
        table.add_column("candidate", style="bold")
        for col in cols:
            table.add_column(col, justify="right")
        for cand, metrics in by_cand.items():
            table.add_row(cand, *[fmt_ci(metrics[c], known[task]) if c in listed
                                  else fmt(metrics[c].value, c) for c in cols])
        tables.append(table)
    return tables


STATUS_STYLE = {"pass": "green", "fail": "red", "insufficient": "yellow", "ok": "green", "alert": "red",
                "info": "dim"}


def verdict_table(verdicts: list[Verdict], rehearsal: bool = False) -> Table:
    passed = all(v.status == "pass" for v in verdicts)
    whose = " (a rehearsal: the stand-ins' verdict, not the real models')" if rehearsal else ""
    table = Table(title=f"Manifest verdict: {'PASS' if passed else 'NOT PASSED'}{whose}", title_justify="left")
    for col in ("criterion", "status", "observed", "interval", "threshold", "n", "evidence"):
        table.add_column(col, justify="right" if col in ("observed", "threshold", "n") else "left")
    for v in verdicts:
        table.add_row(v.criterion, f"[{STATUS_STYLE[v.status]}]{v.status}[/]", short(v.observed),
                      f"[{short(v.ci_low)}, {short(v.ci_high)}]", short(v.threshold), str(v.n), v.evidence)
    return table


def verdict_markdown(verdicts: list[Verdict]) -> list[str]:
    passed = all(v.status == "pass" for v in verdicts)
    counts = {s: sum(v.status == s for v in verdicts) for s in STATUSES}
    lines = [f"## Verdict: {'PASS' if passed else 'NOT PASSED'}", "",
             f"{counts['pass']} pass, {counts['fail']} fail, {counts['insufficient']} insufficient evidence.", "",
             "| criterion | status | observed | interval | n | evidence |", "|---|---|---:|---|---:|---|"]
    lines += [f"| {v.criterion} | **{v.status}** | {short(v.observed)} | [{short(v.ci_low)}, {short(v.ci_high)}] "
              f"| {v.n} | {v.evidence} |" for v in verdicts]
    return [*lines, ""]


def cost_per_1k_requests(run: RunRecord, cost: float, candidate: str, task: str) -> float | None:
    """What 1,000 answers cost at the throughput this run saw: the candidate's `cost_per_hour` over the seconds
    its generation on the task took (all requests in flight together), per request. None without a cost."""
    seconds, n = run.timings_s.get(f"{candidate}/{task}"), run.tasks[task].n_test
    if not cost or not seconds or not n:
        return None
    return cost_per_1k(cost, seconds, n)


def latency_trio(values: Mapping[str, float | None], kind: str) -> str:
    """"p50 / p90 / p99" of one latency kind (ttft, itl, e2e) from a run's metric values by name."""
    return " / ".join(fmt(values.get(f"{kind}_ms_p{q}"), f"{kind}_ms_p{q}") for q in (50, 90, 99))


def latency_markdown(run: RunRecord, costs: Mapping[str, float], results: list[MetricResult],
                     known: Mapping[str, TaskMetrics]) -> list[str]:
    """Per task, each candidate's headline quality beside its latency percentiles and cost: the frontier a
    "small fine-tune against a big model" decision is about."""
    lines = ["## Latency and cost", "",
             "Milliseconds per request, p50 / p90 / p99 (inter-token: all gaps pooled); cost per 1,000 requests "
             "from `cost_per_hour` and this run's generation time.", ""]
    for task, by_cand in _grouped(results).items():
        quality = run.tasks[task].metrics[0]
        lines += [f"### {task}", "", f"| candidate | {quality} | TTFT | ITL | E2E | cost / 1k requests |",
                  "|---|---:|---:|---:|---:|---:|"]
        for cand, metrics in by_cand.items():
            values = {name: r.value for name, r in metrics.items()}
            trios = [latency_trio(values, kind) for kind in ("ttft", "itl", "e2e")]
            cost = cost_per_1k_requests(run, costs.get(cand, 0.0), cand, task)
            lines.append(f"| {cand} | {fmt_ci(metrics[quality], known[task]) if quality in metrics else '–'} | "
                         + " | ".join(trios) + f" | {'–' if cost is None else f'{cost:.4f}'} |")
        lines.append("")
    return lines


def markdown(run: RunRecord, costs: Mapping[str, float], results: list[MetricResult],
             verdicts: list[Verdict] | None = None, *, known: Mapping[str, TaskMetrics],
             corrections: list[Correction] | None = None, slices: SliceReport | None = None) -> str:
    """report.md; `costs`: each candidate's cost per hour; `known`: each task's metrics; `slices`: metrics by
    slice, where tasks declare slicings."""
    lines = [f"# Run {run.run_id}", "",
             f"Suite **{run.suite_name}** (`{run.suite_file}`), status **{run.status}**, "
             f"started {run.started_at}, finished {run.finished_at}.", ""]
    if run.rehearsal:
        lines += ["**A rehearsal** (`--rehearse`): every model replaced by an embedded stand-in on a CPU; the verdict "
                  "is the stand-ins', never the real models'. What changed:", "",
                  *[f"- {note}" for note in run.rehearsal], ""]
    if verdicts is not None:
        lines += verdict_markdown(verdicts)
    if run.failed_requests:
        lines += [f"**{run.failed_requests} requests failed**: their answers score as empty. "
                  "`harness run --resume` retries them.", ""]
    lines += provenance_markdown(run)
    lines += [f"Seed {run.seed}; intervals: percentile bootstrap, {run.bootstrap.resamples} resamples, "
              f"{level(run.bootstrap.confidence)} confidence. Git revision `{run.git_revision}`.", ""]
    for task, by_cand in _grouped(results).items():
        info = run.tasks[task]
        cols = _columns(info.metrics)
        lines += [f"## {task}", "", f"{info.kind}, {info.n_test} test examples, task version {info.version}.",
                  "", "| candidate | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
        for cand, metrics in by_cand.items():
            cells = [fmt_ci(metrics[c], known[task]) if c in info.metrics else fmt(metrics[c].value, c)
                     for c in cols]
            lines.append(f"| {cand} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += slices_markdown(slices, known)
    lines += correction_markdown(corrections or [])
    lines += latency_markdown(run, costs, results, known)
    lines += ["## Timings (seconds)", "", "| stage | s |", "|---|---:|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in run.timings_s.items()]
    versions = ", ".join(f"{k} {v}" for k, v in run.versions.items())
    lines += ["", f"Versions: {versions}.", ""]
    return "\n".join(lines)


def provenance_markdown(run: RunRecord) -> list[str]:
    """Where the answers came from: a rescored run's source (whose answers and latency these are), and answers
    reused from the generation cache (which this run did not time)."""
    lines = []
    if run.rescored_from:
        lines += [f"Rescored from run `{run.rescored_from}`: its answers and their latency, scored again without "
                  "generating.", ""]
    cache = run.cache
    if cache is not None and cache.reused:
        runs = sorted({source for per in cache.answers.values() for c in per.values() for source in c.from_runs})
        lines += [f"{cache.reused} of {cache.reused + cache.generated} answers came from the generation cache "
                  f"(run{'s' if len(runs) > 1 else ''} {', '.join(runs)}): latency figures cover only the "
                  f"{cache.generated} this run generated, and no latency criterion is decided where a side holds "
                  "reused answers (`harness run --no-cache` times every request).", ""]
    return lines


CORRECTION_COLUMNS = ("task", "metric", "candidate", "raw (machine)", "corrected", "labels", "interval", "sensitivity",
                      "specificity")


def correction_rows(corrections: list[Correction]) -> list[tuple[str, ...]]:
    """Each machine-scored metric raw beside corrected by reviewers' labels, as text cells (CORRECTION_COLUMNS)."""
    def rate(r: tuple[float, float, float] | None) -> str:
        return "–" if r is None else _with_interval(*r)

    rows: list[tuple[str, ...]] = []
    for c in corrections:
        corrected = ("no labels yet" if c.labels < 2 else _with_interval(c.value, c.ci_low, c.ci_high))
        interval = {"clt": "PPI++ (normal)", "bootstrap": "PPI++ (bootstrap)",
                    "human_only": "labels' exact (too few for PPI++)"}.get(c.method, c.method)
        labels = f"{c.labels} of {c.n}" + (f" ({c.cannot_tell} cannot tell, at worst)" if c.cannot_tell else "")
        rows.append((c.task, c.metric, c.candidate, _with_interval(c.raw, c.raw_low, c.raw_high), corrected, labels,
                     interval if c.labels >= 2 else "–", rate(c.sensitivity), rate(c.specificity)))
    return rows


def correction_table(corrections: list[Correction]) -> Table:
    confidence = corrections[0].confidence if corrections else 0.95
    table = Table(title=f"Machine-scored metrics corrected by reviewers' labels ({level(confidence)} intervals)")
    for column in CORRECTION_COLUMNS:
        table.add_column(column)
    for row in correction_rows(corrections):
        table.add_row(*row)
    return table


def correction_markdown(corrections: list[Correction]) -> list[str]:
    if not corrections:
        return []
    confidence = corrections[0].confidence
    lines = [f"## Corrected by reviewers' labels ({level(confidence)} intervals)", "",
             "A detector's rate or a judge's score is the machine's opinion; reviewers label a uniformly random "
             "sample of the answers (Review page) and prediction-powered inference corrects the machine with them. "
             "Sensitivity and specificity: the machine against the labels.", "",
             "| " + " | ".join(CORRECTION_COLUMNS) + " |", "|" + "---|" * len(CORRECTION_COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in correction_rows(corrections)]
    return [*lines, ""]


def changes_table(changes: list[Change], before: str, after: str) -> Table:
    moved = [c for c in changes if c.movement != "unchanged"]
    table = Table(title=f"{before} → {after}: {len(moved)} of {len(changes)} metrics moved beyond their intervals",
                  title_justify="left")
    for col in ("task", "candidate", "metric", "before", "after", "movement"):
        table.add_column(col)
    style = {"regression": "red", "improvement": "green", "unchanged": "dim"}
    for c in sorted(changes, key=lambda c: (c.movement == "unchanged", c.task, c.candidate, c.metric)):
        table.add_row(c.task, c.candidate, c.metric,
                      f"{fmt(c.before, c.metric)} [{fmt(c.before_ci[0], c.metric)}, {fmt(c.before_ci[1], c.metric)}]",
                      f"{fmt(c.after, c.metric)} [{fmt(c.after_ci[0], c.metric)}, {fmt(c.after_ci[1], c.metric)}]",
                      f"[{style[c.movement]}]{c.movement}[/]")
    return table


def bench_table(candidate: str) -> Table:
    table = Table(title=f"{candidate} under load (ms: p50 / p90 / p99)", title_justify="left")
    for col in ("level", "req/s", "out tok/s", "goodput", "TTFT", "TPOT", "ITL", "E2E", "errors", "$/1k req"):
        table.add_column(col, justify="left" if col == "level" else "right")
    return table


def add_bench_row(table: Table, r: LevelResult) -> None:
    def trio(d: dict[str, float]) -> str:
        return percentile_trio(d, digits=0)

    level = f"c={r.concurrency}" + (f" @ {r.rate:g} req/s" if r.rate else "")
    table.add_row(level, f"{r.request_throughput:.2f}", f"{r.output_throughput:.1f}", f"{r.goodput_rps:.2f}",
                  trio(r.ttft_ms), trio(r.tpot_ms), trio(r.itl_ms), trio(r.e2e_ms), str(r.errors),
                  f"{r.cost_per_1k_requests:.4f}")


def data_table(reports: list[TaskDataReport]) -> Table:
    table = Table(title="Data check", title_justify="left")
    for col in ("task", "train", "test", "exact dup (train/test)", "near dup (train/test)", "train∩test",
                "labels (min/max per label in train)", "test length p50 / p95 / max", "problems"):
        table.add_column(col, justify="right" if col in ("train", "test", "train∩test") else "left")
    for r in reports:
        labels = "–"
        if r.labels:
            counts = [c["train"] for c in r.labels.values()]
            labels = f"{len(r.labels)} ({min(counts)}/{max(counts)})"
        length = r.lengths.get("test", {})
        unit = r.length_unit.split()[0]
        lengths = f"{length['p50']:.0f} / {length['p95']:.0f} / {length['max']} {unit}" if length else "–"
        problems = "[red]blocking[/]" if r.blocking else ("[yellow]warnings[/]" if r.warnings else "[green]ok[/]")
        table.add_row(r.task, str(r.sizes["train"]), str(r.sizes["test"]),
                      f"{r.exact_duplicates['train']}/{r.exact_duplicates['test']}",
                      f"{r.near_duplicates['train']}/{r.near_duplicates['test']}", str(r.overlap), labels, lengths,
                      problems)
    return table


def _with_interval(value: float, low: float, high: float) -> str:
    return "–" if math.isnan(value) else f"{value:.3f} [{low:.3f}, {high:.3f}]"


def validation_tables(result: ValidationReport, tuned: CrossValidation | None = None) -> list[Table]:
    """One table per labelled set: every predictor's precision, recall, F1 and balanced accuracy (with the
    cross-validated detector's held-out row, where tuned), then the value each fold chose."""
    tables = []
    scores = [*result.scores, *(tuned.scores if tuned else ())]
    subsets = list(dict.fromkeys(s.subset for s in scores))
    for subset in subsets:
        rows = [s for s in scores if s.subset == subset]
        n = rows[0].n
        table = Table(title=f"{subset} (n={n} answers; {level(result.confidence)} bootstrap intervals, a question's "
                            "answers resampled together)")
        table.add_column("predictor")
        for measure in MEASURES:
            table.add_column(measure.replace("_", " "), justify="right")
        for predictor in dict.fromkeys(s.predictor for s in rows):
            cells = {s.measure: s for s in rows if s.predictor == predictor}
            table.add_row(predictor, *[_with_interval(cells[m].value, cells[m].ci_low, cells[m].ci_high)
                                       for m in MEASURES])
        for d in result.differences:
            if d.subset == subset and d.measure == "balanced_accuracy":
                table.caption = (f"balanced accuracy, {d.predictor} minus {d.baseline}: {d.delta:+.3f} "
                                 f"[{d.ci_low:+.3f}, {d.ci_high:+.3f}]")
        tables.append(table)
    if tuned:
        folds = Table(title=f"{tuned.field} chosen by cross-validation across questions, among "
                            f"{', '.join(f'{v:g}' for v in tuned.grid)}")
        for column in ("fold", tuned.field, "balanced accuracy on the other folds", "held-out answers"):
            folds.add_column(column, justify="right")
        for f in tuned.folds:
            folds.add_row(str(f.fold + 1), f"{f.value:g}", f"{f.train_balanced_accuracy:.3f}", str(f.test_answers))
        tables.append(folds)
    return tables


def reading_text(r: Reading) -> str:
    """A monitored value for people: with its interval, and with its test's p-value where there is no interval or
    a rule reads the p-value."""
    value = fmt(r.value, r.signal)
    p = f" (p={r.p_value:.2g})" if r.p_value is not None else ""
    if r.ci_low is None or r.ci_high is None:
        return value + p
    return f"{value} [{fmt(r.ci_low, r.signal)}, {fmt(r.ci_high, r.signal)}]" + (p if "p >=" in (r.rule or "") else "")


def _ruled(report: MonitorReport) -> list[str]:
    """The signals with a rule, in the order they were read."""
    return list(dict.fromkeys(r.signal for r in report.readings if r.status != "info"))


def monitor_tables(report: MonitorReport) -> list[Table]:
    """Windows × ruled signals (each cell coloured by its status), then every reading of the last window."""
    signals = _ruled(report)
    summary = Table(title=f"Monitor {report.task} against {report.against}: {report.counts['alert']} alerts, "
                          f"{report.counts['insufficient']} insufficient", title_justify="left")
    summary.add_column("window")
    summary.add_column("rows", justify="right")
    for name in signals:
        summary.add_column(name, justify="right")
    for w in report.windows:
        by = {r.signal: r for r in w.readings}
        summary.add_row(w.window, str(w.n), *[f"[{STATUS_STYLE[by[s].status]}]{reading_text(by[s])}[/]" if s in by
                                              else "–" for s in signals])
    last = report.windows[-1]
    detail = Table(title=f"Window {last.window} ({last.n} rows)", title_justify="left")
    for col in ("signal", "status", "value", "rule", "evidence"):
        detail.add_column(col)
    for r in last.readings:
        detail.add_row(r.signal, f"[{STATUS_STYLE[r.status]}]{r.status}[/]", reading_text(r), r.rule or "–",
                       r.evidence)
    return [summary, detail]


def monitor_markdown(report: MonitorReport) -> str:
    counts = report.counts
    lines = [f"# Monitor: {report.task}", "",
             f"Traffic `{report.log}` ({report.lines} lines; {report.other_tasks} of other tasks) against "
             f"`{report.against}`" + (f", candidate **{report.candidate}**" if report.candidate else "") + ".",
             f"Windows: {report.spec.window}; reference: {report.spec.reference} split; "
             f"{report.spec.confidence:.0%} intervals; windows under {report.spec.min_rows} rows are insufficient.", "",
             f"**{counts['alert']} alerts**, {counts['insufficient']} insufficient, {counts['ok']} ok.", ""]
    if report.broken:
        lines += [f"**{len(report.broken)} broken lines skipped** (first: {report.broken[0]}).", ""]
    signals = _ruled(report)
    lines += ["| window | rows | " + " | ".join(signals) + " |", "|---|---:|" + "---:|" * len(signals)]
    for w in report.windows:
        by = {r.signal: r for r in w.readings}
        cells = [f"{reading_text(by[s])} **{by[s].status}**" if s in by else "–" for s in signals]
        lines.append(f"| {w.window} | {w.n} | " + " | ".join(cells) + " |")
    last = report.windows[-1]
    lines += ["", f"## Window {last.window}", "", "| signal | status | value | rule | evidence |",
              "|---|---|---:|---|---|"]
    lines += [f"| {r.signal} | {r.status} | {reading_text(r)} | {r.rule or '–'} | {r.evidence} |"
              for r in last.readings]
    for table in signal_tables(last.details):
        lines += ["", f"{table.title}:", "", "| " + " | ".join(table.columns) + " |",
                  "|" + "---|" * len(table.columns)]
        lines += ["| " + " | ".join(str(row.get(c, "")) for c in table.columns) + " |" for row in table.rows]
    return "\n".join([*lines, ""])


def signal_tables(details: dict[str, dict]) -> list[DetailTable]:
    """Each drift signal's details as it says they read (a signal no longer installed shows none)."""
    return [table for name, detail in details.items() if name in DRIFT_SIGNALS
            for table in DRIFT_SIGNALS[name].tables(detail) if table.rows]
