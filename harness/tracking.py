"""Experiment tracking with MLflow: a finished run directory logged as one MLflow run (parameters, every metric
with its interval bounds, the verdict, the run's files and its adapters with their lineage), and adapters
registered in the model registry when the gate passes (those the criteria judge as candidates).

The run directory stays the record; MLflow gets a copy. Logging the same run again finds the MLflow run by its
`harness.run_id` tag: unchanged content is not logged twice, changed content (a resumed run) replaces it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

import httpx

from harness.config import Suite, TrackingSpec
from harness.errors import HarnessError, redact
from harness.run_record import RunRecord
from harness.snapshots import suite_of
from harness.store import ResultsDir, RunDir, read_lineage

# MLflow's own limits on one log_batch call.
_MAX_PARAMS, _MAX_METRICS, _MAX_PARAM_VALUE = 100, 1000, 6000
T = TypeVar("T")


@dataclass(frozen=True)
class TrackedRun:
    """Where a harness run landed in MLflow."""

    mlflow_run_id: str
    experiment_id: str
    tracking_uri: str
    registered: list[str] = field(default_factory=list)  # "model-name/version"
    unchanged: bool = False  # already logged with the same content


def local_uri(results: Path) -> str:
    """The default store: SQLite in RESULTS/mlflow/ (MLflow's file store is deprecated)."""
    folder = ResultsDir(results).mlflow_dir.resolve()
    return f"sqlite:///{folder / 'mlflow.db'}"


def tracking_uri(spec: TrackingSpec | None, results: Path) -> str:
    return spec.uri if spec is not None and spec.uri else local_uri(results)


def choose(suite_spec: TrackingSpec | None, track: bool, uri: str | None) -> TrackingSpec | None:
    """The tracking settings of a run: the suite's `tracking:`, switched on or pointed elsewhere by the CLI."""
    if uri is not None:
        return (suite_spec or TrackingSpec()).model_copy(update={"uri": uri})
    if track and suite_spec is None:
        return TrackingSpec()
    return suite_spec


def problem(uri: str) -> str | None:
    """Why the tracking store cannot be used, found before any work: a server that does not answer, a local
    database whose folder cannot be made, MLflow not installed."""
    try:
        import mlflow  # noqa: F401
    except ImportError:
        return "MLflow is not installed (pip install 'harness[tracking]')"
    if uri.startswith(("http://", "https://")):
        try:
            httpx.get(uri.rstrip("/") + "/health", timeout=5).raise_for_status()
        except httpx.HTTPError as exc:
            return f"tracking server {redact(uri)} does not answer ({type(exc).__name__})"
    elif uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"cannot make the tracking folder {folder}: {exc.strerror}"
    return None


def check(spec: TrackingSpec, results: Path, where: str) -> None:
    """Stop before any work when the store cannot be used; `where` names the option or field that chose it."""
    found = problem(tracking_uri(spec, results))
    if found:
        raise HarnessError(f"{where}: {found}")


def _batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _key(*parts: str) -> str:
    # MLflow keys allow letters, digits, _ - . / : and spaces.
    return "/".join(re.sub(r"[^\w\-. :]", "_", p) for p in parts)


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def adapters_of(record: RunRecord, suite: Suite, suite_dir: Path) -> dict[str, Path]:
    """Every adapter the run scored: trained ones, and adapter folders candidates name."""
    out = {name: Path(path) for name, path in record.adapters.items()}
    for cand in suite.candidates:
        if cand.adapter and cand.name not in out:
            path = Path(cand.adapter)
            path = path if path.is_absolute() else suite_dir / path
            if path.is_dir():
                out[cand.name] = path
    return out


def params_of(record: RunRecord, suite: Suite, adapters: dict[str, Path]) -> dict[str, str]:
    """What the run was: suite and data hashes, task versions, candidates, adapter lineage."""
    params: dict[str, Any] = {
        "suite": record.suite_name, "suite_sha256": record.suite_sha256, "run_id": record.run_id,
        "seed": record.seed, "git_revision": record.git_revision,
        "bootstrap.resamples": record.bootstrap.resamples, "bootstrap.confidence": record.bootstrap.confidence,
        "machine.native_dtype": record.machine.native_dtype,
    }
    for name, task in record.tasks.items():
        params[_key("task", name, "version")] = task.version
        params[_key("task", name, "task_sha256")] = task.task_sha256
        params[_key("task", name, "data_sha256")] = _digest(task.data_sha256)
        params[_key("task", name, "n_test")] = task.n_test
        params[_key("task", name, "metrics")] = ",".join(task.metrics)
    for cand in suite.candidates:
        for setting, value in (("model", cand.model), ("backend", cand.backend), ("adapter", cand.adapter),
                               ("few_shot", cand.few_shot)):
            params[_key("candidate", cand.name, setting)] = value
    for name, path in adapters.items():
        lineage = read_lineage(path)
        params[_key("adapter", name, "path")] = str(path)
        for item in ("adapter_key", "base_model", "task", "generation", "steps", "train_sha256", "dtype"):
            params[_key("adapter", name, item)] = lineage.get(item)
        parent = lineage.get("parent") or {}
        params[_key("adapter", name, "parent_key")] = parent.get("adapter_key")
    return {k: str(v)[:_MAX_PARAM_VALUE] for k, v in params.items() if v is not None and v != ""}


def metrics_of(run: RunDir) -> dict[str, float]:
    """Every metric with its interval bounds (a corrected one with its label count), and the verdict's counts."""
    out: dict[str, float] = {}
    for row in run.read_metrics():
        key = _key(row.task, row.candidate, row.metric)
        for suffix, value in (("", row.value), (".low", row.ci_low), (".high", row.ci_high)):
            if math.isfinite(value):  # MLflow takes no value for what does not exist
                out[key + suffix] = value
    for found in run.read_corrections():  # how many labels each corrected metric stands on
        key = _key(found["task"], found["candidate"], f"{found['metric']}_corrected")
        out[key + ".labels"] = float(found["labels"])
    verdict = run.read_verdict()
    if verdict is not None:
        out["verdict.passed"] = float(bool(verdict.get("passed")))
        for status, count in (verdict.get("counts") or {}).items():
            out[f"verdict.{status}"] = float(count)
    return out


def log_run(run: RunDir, spec: TrackingSpec | None, results: Path, say: Callable[[str], None] = print) -> TrackedRun:
    """Log a finished run directory to MLflow; registers its adapters when asked, the gate on the run's own manifest
    passed and the run is complete (no failed request): each adapter that is a criterion's candidate."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    record = run.read_run()
    if record.status not in ("complete", "incomplete"):
        raise HarnessError(f"{run.run_json}: status is {record.status!r}; only a finished run is logged")
    uri = tracking_uri(spec, results)
    suite = suite_of(record, run.run_json)
    adapters = adapters_of(record, suite, Path(record.suite_file).parent)
    params = params_of(record, suite, adapters)
    metrics = metrics_of(run)
    verdict = run.read_verdict()
    fingerprint = _digest({"params": params, "metrics": metrics, "status": record.status})
    experiment = (spec.experiment if spec is not None and spec.experiment else None) or record.suite_name

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        experiment_id = _experiment(client, experiment, uri)
        for old in client.search_runs([experiment_id], f"tags.`harness.run_id` = '{run.run_id}'"):
            if old.data.tags.get("harness.fingerprint") == fingerprint:
                return TrackedRun(old.info.run_id, experiment_id, redact(uri), unchanged=True)
            say(f"replacing MLflow run {old.info.run_id}: run {run.run_id} changed since it was logged")
            client.delete_run(old.info.run_id)
        passed = verdict.get("passed") if verdict is not None else None
        run_id = client.create_run(experiment_id, run_name=run.run_id).info.run_id
        now = int(time.time() * 1000)
        for param_chunk in _batches(params.items(), _MAX_PARAMS):
            client.log_batch(run_id, params=[Param(k, v) for k, v in param_chunk])
        for metric_chunk in _batches(metrics.items(), _MAX_METRICS):
            client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in metric_chunk])
        for tag_chunk in _batches(_tags(run.run_id, fingerprint, record.status, verdict).items(), _MAX_PARAMS):
            client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tag_chunk])
        say(f"MLflow: logging {run.path} to {redact(uri)} (experiment {experiment})")
        client.log_artifacts(run_id, str(run.path), "run")
        for name, path in adapters.items():
            client.log_artifacts(run_id, str(path), f"adapters/{name}")
        registered = []
        if spec is not None and spec.register_adapters and passed:
            judged = _promotable(run.run_id, record, verdict, adapters, say)
            registered = _register(client, MlflowException, run_id, record, judged) if judged else []
        client.set_terminated(run_id, "FINISHED")
    except MlflowException as exc:
        raise HarnessError(f"MLflow at {redact(uri)}: {exc.message.splitlines()[0]}") from None
    return TrackedRun(run_id, experiment_id, redact(uri), registered)


def _experiment(client: Any, name: str, uri: str) -> str:
    """The experiment's id, created where it does not exist yet."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    # A local database keeps its artifacts beside it (MLflow would put them under the working directory).
    artifacts = ((Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
                 if uri.startswith("sqlite:///") else None)
    return str(client.create_experiment(name, artifact_location=artifacts))


def _tags(run_id: str, fingerprint: str, status: str, verdict: dict[str, Any] | None) -> dict[str, str]:
    """The run's identity, status and verdict, and one tag per criterion, as MLflow tags."""
    passed = verdict.get("passed") if verdict is not None else None
    tags = {"harness.run_id": run_id, "harness.fingerprint": fingerprint, "harness.status": status,
            "harness.verdict": "none" if passed is None else ("pass" if passed else "fail"), "mlflow.runName": run_id}
    for i, criterion in enumerate((verdict or {}).get("criteria", [])):
        tags[f"criterion.{i}"] = f"{criterion.get('status')}: {criterion.get('criterion', '')}"[:_MAX_PARAM_VALUE]
    return tags


def _promotable(run_id: str, record: RunRecord, verdict: dict[str, Any] | None, adapters: dict[str, Path],
                say: Callable[[str], None]) -> dict[str, Path]:
    """The adapters a passing gate may register: promotion needs the manifest written before the run (a later one
    can be fitted to the results) and a run with no failed request, whatever a gate allowing failures said."""
    if record.status != "complete":
        say(f"MLflow: adapters of {run_id} not registered: the run is {record.status}")
        return {}
    if verdict is None or verdict.get("manifest") != record.manifest:
        say(f"MLflow: adapters of {run_id} not registered: its verdict is not on the run's own manifest")
        return {}
    judged = judged_adapters(verdict["manifest"], adapters)
    for name in adapters.keys() - judged.keys():
        say(f"MLflow: adapter {name} of {run_id} not registered: no criterion has it as candidate")
    return judged


def judged_adapters(manifest: dict[str, Any] | None, adapters: dict[str, Path]) -> dict[str, Path]:
    """The adapters a passing verdict speaks for: those whose candidate is the `candidate` of at least one criterion
    (a baseline, or an adapter no criterion names, was not checked)."""
    named = {c.get("candidate") for c in (manifest or {}).get("criteria", [])}
    return {name: path for name, path in adapters.items() if name in named}


def _register(client: Any, mlflow_error: type[Exception], run_id: str, record: RunRecord,
              adapters: dict[str, Path]) -> list[str]:
    """One registered model per suite candidate with an adapter, a new version per passing run."""
    out = []
    for name, path in adapters.items():
        model_name = f"{record.suite_name}-{name}"
        try:
            client.create_registered_model(model_name, description=f"LoRA adapter {name} of suite "
                                           f"{record.suite_name}, registered when its gate passed")
        except mlflow_error as exc:
            if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                raise
        lineage = read_lineage(path)
        tags: dict[str, str] = {k: str(lineage[k]) for k in ("adapter_key", "base_model", "task", "generation")
                                if k in lineage}
        tags["harness.run_id"] = record.run_id
        version = client.create_model_version(model_name, f"runs:/{run_id}/adapters/{name}", run_id=run_id, tags=tags)
        out.append(f"{model_name}/{version.version}")
    return out
