"""Monitoring after deployment: a traffic log against the task's reference data, window by window.

Every registered drift signal that applies (inputs: lengths, new words, a domain classifier; outputs:
answer lengths, predicted labels) and every task metric the rows can feed (invalid-label and error
rates on all rows, accuracy or ROUGE on rows with a reference from feedback, the hallucination rate
through the task's detector, latency where logged) is measured with an interval or a p-value. The
manifest's `monitor.rules` (or each signal's default) turn a reading into ok, alert or insufficient,
exactly as the gate does: ok when the whole interval is on the good side, alert when it is wholly on the
bad side, insufficient in between or when the window has fewer than `min_rows` rows.

The log is read in two streamed passes: one checks every line and notes each row's window and place, the other
reads each window back a chunk at a time. A chunk's features are reduced to the streamed signals' statistics and
dropped; the task's metrics, the domain classifier and any signal that does not stream read a bounded uniform
sample of the window (`sample_rows`), and say so. The whole log is one more window, filled from the same chunks.

Against a run, the reference is the run's own data and the candidate's gated predictions; against a
suite, the task's data (true labels and reference answers stand in for predictions).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.config import DataSpec, load_suite
from harness.detection import Detectors
from harness.drift import DRIFT_SIGNALS, DriftInput, Side, StreamedSignal
from harness.drift.window import Streams, WindowStats
from harness.errors import ConfigError, HarnessError
from harness.manifest_check import load_manifest
from harness.manifest_spec import MonitorRule, MonitorSpec
from harness.metrics import ScoringInput
from harness.metrics.classification import parse_label
from harness.metrics.hallucination import claims_of
from harness.plan import FINISHED, PlannedTask, load_suite_manifest, plan_tasks, tasks_of_run
from harness.records import ALARMS, Alarm, Completion, Example, Reading
from harness.scoring import TaskEvidence
from harness.snapshots import manifest_of
from harness.stats import Decision, Direction, decide
from harness.store import RunDir
from harness.traffic import LoggedRow, TrafficLog, scan_traffic

TRAFFIC = "traffic"
# Rows read, featurized and dropped at a time: large enough for vectorized work, small beside any memory budget.
CHUNK_ROWS = 5000


@dataclass
class Reference:
    """What traffic is compared with: the task (with its data) and, against a run, a candidate's answers."""

    task: PlannedTask
    spec: MonitorSpec
    against: str
    candidate: str | None
    side: Side
    rules_file: str


@dataclass
class WindowReport:
    window: str
    start: str
    end: str
    n: int
    readings: list[Reading]
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    examples: dict[str, list[int]] = field(default_factory=dict)  # signal -> log lines behind an alert

    def to_dict(self) -> dict[str, Any]:
        return {"window": self.window, "start": self.start, "end": self.end, "n": self.n,
                "readings": [r.to_dict() for r in self.readings], "details": self.details,
                "examples": self.examples}


@dataclass
class MonitorReport:
    log: str
    task: str
    against: str
    candidate: str | None
    spec: MonitorSpec
    lines: int
    other_tasks: int
    broken: list[str]
    windows: list[WindowReport]
    traffic: TrafficLog | None = None  # to read the rows again (the labelled ones, for export)
    data: DataSpec | None = None

    @property
    def readings(self) -> list[Reading]:
        return [r for w in self.windows for r in w.readings]

    @property
    def counts(self) -> dict[str, int]:
        return {s: sum(r.status == s for r in self.readings) for s in ALARMS}

    @property
    def alerting(self) -> bool:
        """Exit 1, as the gate: an alert, or a rule the evidence cannot settle."""
        return any(r.status in ("alert", "insufficient") for r in self.readings) or bool(self.broken)

    def to_dict(self) -> dict[str, Any]:
        return {"log": self.log, "task": self.task, "against": self.against, "candidate": self.candidate,
                "monitor": self.spec.model_dump(mode="json"), "lines": self.lines, "other_tasks": self.other_tasks,
                "broken_lines": self.broken, "counts": self.counts,
                "windows": [w.to_dict() for w in self.windows]}


def signals_of(task: PlannedTask) -> list[str]:
    """Every name a monitor rule may use for this task: the drift signals and the task's metrics."""
    # Ratings come from reviewers and judgements from a judging stage the monitor does not run.
    metrics = [m for m in task.metric_names if not task.metrics[m].needs & {"ratings", "judge"}]
    return DRIFT_SIGNALS.names() + metrics


def check_rules(spec: MonitorSpec, task: PlannedTask, where: str) -> None:
    known = signals_of(task)
    for i, rule in enumerate(spec.rules or []):
        if rule.signal not in known:
            raise ConfigError(where, f"monitor.rules.{i}.signal",
                              f"no signal {rule.signal!r} for task {task.name} (known: {', '.join(known)})")
        drift = rule.signal in DRIFT_SIGNALS
        takes_p = drift and (DRIFT_SIGNALS[rule.signal].kind == "test" or DRIFT_SIGNALS[rule.signal].gives_p_value)
        takes_interval = not drift or DRIFT_SIGNALS[rule.signal].kind == "interval"
        if rule.p_below is not None and not takes_p:
            raise ConfigError(where, f"monitor.rules.{i}", f"{rule.signal} takes at_most or at_least")
        if rule.p_below is None and not takes_interval:
            raise ConfigError(where, f"monitor.rules.{i}", f"{rule.signal} takes p_below")


def rules_for(spec: MonitorSpec) -> dict[str, list[MonitorRule]]:
    """The manifest's rules by signal, else every drift signal's defaults."""
    if spec.rules is not None:
        out: dict[str, list[MonitorRule]] = {}
        for rule in spec.rules:
            out.setdefault(rule.signal, []).append(rule)
        return out
    return {name: [MonitorRule(signal=name, **r) for r in s.default_rules] for name, s in DRIFT_SIGNALS.items()}


def _pick(names: list[str], chosen: str | None, what: str, where: str) -> str:
    if chosen is not None:
        if chosen not in names:
            raise HarnessError(f"{where}: no {what} {chosen!r} (has {', '.join(names)})")
        return chosen
    if len(names) == 1:
        return names[0]
    raise HarnessError(f"{where}: has {len(names)} {what}s ({', '.join(names)}); choose one with --{what}")


def _joined(task: PlannedTask, ex: Example) -> str:
    return "\n".join(ex.inputs.get(k, "") for k in task.spec.data.inputs)


def reference_of(against: Path, task_name: str | None, candidate: str | None,
                 manifest_file: Path | None) -> Reference:
    """The task, its monitor settings and the reference side, from a finished run or a suite file."""
    run = RunDir(against)
    if against.is_dir():
        record, suite, tasks = tasks_of_run(run)
        if record.status not in FINISHED:
            raise HarnessError(f"{against}: the run has not finished (status {record.status!r})")
        manifest = manifest_of(record, run.run_json)
        rules_file = str(run.run_json)
    else:
        suite = load_suite(against)
        tasks = plan_tasks(suite, against)
        manifest = load_suite_manifest(suite, against)
        rules_file = str(suite.manifest if isinstance(suite.manifest, str) else against)
    if manifest_file is not None:
        manifest = load_manifest(manifest_file)
        rules_file = str(manifest_file)
    task = {t.name: t for t in tasks}[_pick([t.name for t in tasks], task_name, "task", str(against))]
    spec = manifest.monitor if manifest is not None and manifest.monitor is not None else MonitorSpec()
    check_rules(spec, task, rules_file)
    ref_rows = task.data.train if spec.reference == "train" and task.data.train else task.data.test
    texts = [_joined(task, ex) for ex in ref_rows]
    labels = task.data.labels
    if against.is_dir():
        cand = _pick([c.name for c in suite.candidates_of(task.name)], candidate, "candidate", str(against))
        answers = run.finished(cand, task.name)
        outputs = [answers[ex.id].text for ex in task.data.test if ex.id in answers]
        side = Side(texts, outputs, [parse_label(o, labels) for o in outputs] if labels else None)
        return Reference(task, spec, str(against), cand, side, rules_file)
    if candidate is not None:
        _pick([c.name for c in suite.candidates_of(task.name)], candidate, "candidate", str(against))
    references = [ex.references[0] if ex.references else "" for ex in task.data.test]
    side = Side(texts, None if labels else references, [str(ex.reference) for ex in ref_rows] if labels else None)
    return Reference(task, spec, str(against), candidate, side, rules_file)


# The gate's decision rule read as alarms: a rule that holds is ok, a broken one alerts.
_ALARM: dict[Decision, Alarm] = {"holds": "ok", "broken": "alert", "undecided": "insufficient"}


def _status(rules: list[MonitorRule], value: float, low: float | None, high: float | None,
            p: float | None, n: int, spec: MonitorSpec) -> tuple[Alarm, str]:
    """(status, why) of one reading under its rules: alert if any rule is broken, ok if all hold."""
    if not rules:
        return "info", "no rule"
    if n < spec.min_rows:
        return "insufficient", f"{n} rows, fewer than min_rows {spec.min_rows}"
    if math.isnan(value):
        return "insufficient", "no value"
    states: list[Alarm] = []
    for rule in rules:
        if rule.p_below is not None:
            states.append("insufficient" if p is None else "alert" if p < rule.p_below else "ok")
            continue
        lo, hi = (value, value) if low is None or high is None or math.isnan(low) else (low, high)
        direction: Direction = "at_most" if rule.at_most is not None else "at_least"
        threshold = rule.at_most if rule.at_most is not None else rule.at_least
        assert threshold is not None
        states.append(_ALARM[decide(lo, hi, threshold, direction)])
    status: Alarm = "alert" if "alert" in states else "insufficient" if "insufficient" in states else "ok"
    why = {"ok": "holds", "alert": "broken", "insufficient": "the interval straddles a threshold"}[status]
    return status, why


def _traffic_side(task: PlannedTask, rows: list[LoggedRow]) -> Side:
    outputs = [r.row.output or "" for r in rows]
    labels = task.data.labels
    return Side([_joined(task, r.example()) for r in rows], outputs,
                [parse_label(o, labels) for o in outputs] if labels else None)


def _metric_readings(ref: Reference, name: str, stats: WindowStats, rules: dict[str, list[MonitorRule]],
                     detectors: Detectors) -> tuple[list[Reading], dict[str, list[int]]]:
    """The task's metrics on the window's sample: on every row, or (needing a reference) on the rows with feedback.
    Each of the two row sets is scored once (one evidence, one detector pass) for all its metrics."""
    task, spec = ref.task, ref.spec
    metrics = [task.metrics[m] for m in signals_of(task) if m in task.metrics]
    scored: dict[bool, tuple[list[LoggedRow], TaskEvidence, str]] = {}
    for labelled, reservoir in ((False, stats.sample), (True, stats.labelled)):
        used = sorted(reservoir.items, key=lambda r: r.line)
        wanted = [m for m in metrics if ("reference" in m.needs) == labelled]
        if not used or not wanted:
            continue
        examples = [r.example() for r in used]
        comps: list[Completion] = [r.completion(task.name) for r in used]
        findings = {}
        if any("detector" in m.needs for m in wanted):
            claims = claims_of(ScoringInput(task.spec, examples, comps, None))
            findings = {TRAFFIC: detectors.get(task.ref.detector).detect(claims)}
        # Errored rows and missing verdicts count at each metric's worst, as in the gate: an outage must not
        # make the traffic's figures look better.
        scope = "rows with a reference" if labelled else "rows"
        said = f"a uniform sample of {len(used)} of {reservoir.seen} {scope}" if reservoir.sampled else \
            f"{len(used)} {scope}"
        scored[labelled] = used, TaskEvidence(task.spec, examples, task.data.labels, {TRAFFIC: comps},
                                              spec.resamples, spec.seed, findings, worst_for=TRAFFIC,
                                              metrics=task.metrics), said
    out, behind = [], {}
    for metric in metrics:
        labelled = "reference" in metric.needs
        if labelled not in scored:
            continue
        used, ev, said = scored[labelled]
        if metric.name not in rules and math.isnan(metric.value(ev.stats(metric.name)[TRAFFIC], ev.n)):
            continue  # nothing to read (no latency logged, say), and no rule asks: no interval worth its bootstrap
        iv = ev.interval(metric.name, TRAFFIC, spec.confidence)
        status, why = _status(rules.get(metric.name, []), iv.value, iv.low, iv.high, None, len(used), spec)
        missing = bool(ev.missing(metric.name, TRAFFIC).any())
        if missing and status != "info" and (metric.name in ev.no_worst or any(
                (rule.at_most is not None) == metric.higher_is_better for rule in rules.get(metric.name, []))):
            # The errored rows were counted at the metric's worst, which is the rule's good side for a rule that
            # wants the value low on a metric where high is good (or the other way round), or not at all.
            status, why = "insufficient", "errored rows that this rule cannot count against the traffic"
        out.append(Reading(name, metric.name, iv.value, iv.low, iv.high, None, len(used), status,
                           _describe(rules.get(metric.name)), _because(said, status, why)))
        per = metric.per_example(ev.stats(metric.name)[TRAFFIC])
        if status == "alert" and per is not None:
            bad = [r.line for r, v in zip(used, per, strict=True)
                   if not math.isnan(v) and (v < 0.5 if metric.higher_is_better else v > 0.5)]
            behind[metric.name] = bad[:50]
    return out, behind


def _because(evidence: str, status: Alarm, why: str) -> str:
    """The evidence, with the reason when the rule could not be settled."""
    return f"{evidence}; {why}" if status == "insufficient" else evidence


def _describe(rules: list[MonitorRule] | None) -> str | None:
    return " and ".join(r.describe() for r in rules) if rules else None


def _drift_input(ref: Reference, traffic: Side, rows: int | None = None) -> DriftInput:
    spec = ref.spec
    return DriftInput(ref.task.spec, ref.side, traffic, spec.resamples, spec.confidence, spec.seed, rows)


def _window(ref: Reference, name: str, stats: WindowStats, streams: Streams, rules: dict[str, list[MonitorRule]],
            detectors: Detectors) -> WindowReport:
    """The window's readings: streamed signals from their merged statistics over every row, the rest on its sample."""
    sample = sorted(stats.sample.items, key=lambda r: r.line)
    inp = _drift_input(ref, _traffic_side(ref.task, sample), stats.rows)
    readings, details = [], {}
    metric_readings, behind = _metric_readings(ref, name, stats, rules, detectors)
    for signal_name, signal in DRIFT_SIGNALS.items():
        if not signal.applies(inp):
            continue
        if isinstance(signal, StreamedSignal):
            m = signal.compare(inp, streams.prepared[signal_name][1], stats.summaries[signal_name])
        else:
            m = signal.measure(inp)
        status, why = _status(rules.get(signal_name, []), m.value, m.ci_low, m.ci_high, m.p_value, stats.rows,
                              ref.spec)
        readings.append(Reading(name, signal_name, m.value, m.ci_low, m.ci_high, m.p_value, stats.rows,
                                status, _describe(rules.get(signal_name)), _because(m.evidence, status, why)))
        if m.detail:
            details[signal_name] = m.detail
        if status == "alert" and (lines := [sample[i].line for i in signal.rows_behind(inp, m)[:50]]):
            behind[signal_name] = lines
    readings += metric_readings
    assert stats.first is not None and stats.last is not None
    return WindowReport(name, stats.first.isoformat(), stats.last.isoformat(), stats.rows, readings, details, behind)


def _chunks(rows: Iterable[LoggedRow], size: int = CHUNK_ROWS) -> Iterator[list[LoggedRow]]:
    chunk: list[LoggedRow] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def monitor(log: Path, against: Path, task: str | None = None, candidate: str | None = None,
            manifest_file: Path | None = None, skip_bad: bool = False,
            say: Callable[[str], None] = print) -> MonitorReport:
    """Read the log, compare each window (and all of it) with the reference, and resolve the rules."""
    ref = reference_of(against, task, candidate, manifest_file)
    spec = ref.spec
    traffic = scan_traffic(log, ref.task.spec, spec.window, ref.task.data.labels, skip_bad)
    rules = rules_for(spec)
    streams = Streams.of(_drift_input(ref, _traffic_side(ref.task, [])))
    whole = WindowStats.new(spec.sample_rows, spec.seed, "all") if len(traffic.windows) > 1 else None
    reports = []
    detectors = Detectors(say)
    try:
        for i, name in enumerate(traffic.windows, 1):
            say(f"window {name} ({i}/{len(traffic.windows)}): {len(traffic.windows[name])} rows")
            stats = WindowStats.new(spec.sample_rows, spec.seed, name)
            for chunk in _chunks(traffic.read(name)):
                summaries = streams.summarize(_traffic_side(ref.task, chunk))
                for kept in (stats, whole) if whole is not None else (stats,):
                    kept.add(chunk, summaries, streams)
            reports.append(_window(ref, name, stats, streams, rules, detectors))
        if whole is not None:
            say(f"the whole log: {whole.rows} rows")
            reports.append(_window(ref, "all", whole, streams, rules, detectors))
    finally:
        detectors.close()
    return MonitorReport(str(log), ref.task.name, ref.against, ref.candidate, spec, traffic.lines,
                         traffic.other_tasks, traffic.broken, reports, traffic, ref.task.spec.data)


def write_labelled(report: MonitorReport, path: Path) -> int:
    """The traffic rows that carry a reference (feedback, reviewed labels), once each, in the task's own
    columns: a file a fine-tune's `extra_train` reads through the same data checks as the task's data. The log
    is read again, a row at a time; only a short digest of each written row is kept, to write it once."""
    spec = report.data
    if spec is None or not isinstance(spec.reference, str) or report.traffic is None:
        raise HarnessError(f"{path}: task {report.task} has no single reference column to write labels into")
    columns = [*spec.inputs.values(), spec.reference]
    seen: set[bytes] = set()
    try:
        with path.open("w", encoding="utf-8", newline="") as handle:
            table = csv.writer(handle) if path.suffix == ".csv" else None
            if table is not None:
                table.writerow(columns)
            for record in _labelled_records(report.traffic, spec):
                key = hashlib.blake2b(json.dumps(record, sort_keys=True).encode(), digest_size=16).digest()
                if key in seen:
                    continue
                seen.add(key)
                if table is not None:
                    table.writerow(record.values())
                else:
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise HarnessError(f"{path}: cannot write the labelled rows ({exc.strerror})") from None
    return len(seen)


def _labelled_records(traffic: TrafficLog, spec: DataSpec) -> Iterator[dict[str, str]]:
    assert isinstance(spec.reference, str)
    for r in traffic.read_all():
        if r.row.reference is None:
            continue
        record = {spec.inputs[k]: r.row.inputs[k] for k in spec.inputs}
        reference = r.row.reference
        record[spec.reference] = reference if isinstance(reference, str) else (reference or [""])[0]
        yield record
