"""MLflow tracking against a real local MLflow store (SQLite), read back with MLflow's own client."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from harness import tracking
from harness.config import TrackingSpec
from harness.store import RunDir
from tests.conftest import write_yaml
from tests.helpers import run_record
from tests.test_cli import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture
def tracked_suite(small_suite: Path, lora_adapter: Path) -> Path:
    """The small suite plus an adapter candidate, a criterion that passes, and `tracking: {register_adapters: true}`."""
    data = yaml.safe_load(small_suite.read_text())
    data["candidates"].append({"name": "tiny-lora", "model": data["candidates"][0]["model"],
                               "adapter": str(lora_adapter), "batch_size": 4, "tasks": ["keywords"]})
    data["tasks"][0] = {"task": data["tasks"][0], "limit": 6}
    data["manifest"] = {"criteria": [{"task": "keywords", "metric": "error_rate", "candidate": "tiny-lora",
                                      "at_most": 0.5}]}
    data["tracking"] = {"register_adapters": True}
    return write_yaml(small_suite, data)


def _runs(client: MlflowClient, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


def test_a_run_lands_in_mlflow_with_metrics_intervals_verdict_files_and_a_registered_adapter(
        tracked_suite, tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    code, _ = run_cli(monkeypatch, capsys, "run", str(tracked_suite), "--results", str(results), "--run-id", "t1")
    assert code in (0, None)
    run = RunDir(results / "t1")
    record = run.read_run()
    client = MlflowClient(tracking_uri=tracking.local_uri(results))

    [logged] = _runs(client, "small")
    assert logged.data.tags["harness.run_id"] == "t1"
    assert logged.data.tags["harness.verdict"] == "pass"
    assert logged.data.params["suite_sha256"] == record.suite_sha256
    assert logged.data.params["candidate/tiny-lora/adapter"] == record.suite["candidates"][2]["adapter"]
    assert logged.data.params["bootstrap.confidence"] == str(record.bootstrap.confidence)
    assert logged.data.params["task/keywords/version"] == "1"
    # Every metric of metrics.json, with its interval bounds, under task/candidate/metric.
    rows = json.loads(run.metrics_json.read_text())
    checked = 0
    for row in rows:
        key = f"{row['task']}/{row['candidate']}/{row['metric']}"
        if row["value"] is None:
            assert key not in logged.data.metrics
            continue
        assert logged.data.metrics[key] == pytest.approx(row["value"])
        for suffix, bound in ((".low", row["ci_low"]), (".high", row["ci_high"])):
            # A bound that does not exist (a tail percentile of few requests) is not logged as a number.
            assert logged.data.metrics.get(key + suffix) == (None if bound is None else pytest.approx(bound))
        checked += 1
    assert checked > 10
    assert logged.data.metrics["verdict.passed"] == 1.0
    # The run directory's files and the adapter are artifacts of the MLflow run.
    files = {a.path for a in client.list_artifacts(logged.info.run_id, "run")}
    assert {"run/run.json", "run/metrics.json", "run/verdict.json", "run/report.md"} <= files
    adapter_files = {a.path for a in client.list_artifacts(logged.info.run_id, "adapters/tiny-lora")}
    assert "adapters/tiny-lora/adapter_config.json" in adapter_files
    local = Path(client.download_artifacts(logged.info.run_id, "run/metrics.json", str(tmp_path)))
    assert json.loads(local.read_text()) == json.loads(run.metrics_json.read_text())
    # The gate passed, so the adapter has a version in the model registry that points at the logged files.
    [version] = client.search_model_versions("name='small-tiny-lora'")
    assert version.run_id == logged.info.run_id
    assert version.source.endswith("adapters/tiny-lora")

    # Logging the same run again adds nothing; a changed run (re-gated to fail) replaces the MLflow run.
    code, _ = run_cli(monkeypatch, capsys, "export", str(run.path))
    assert code in (0, None)
    assert [r.info.run_id for r in _runs(client, "small")] == [logged.info.run_id]
    failing = write_yaml(tmp_path / "failing.yaml", {"criteria": [
        {"task": "keywords", "metric": "error_rate", "candidate": "tiny-lora", "at_least": 0.5}]})
    run_cli(monkeypatch, capsys, "gate", str(run.path), "--manifest", str(failing))
    code, err = run_cli(monkeypatch, capsys, "export", str(run.path))
    assert code in (0, None), err
    [replaced] = _runs(client, "small")
    assert replaced.info.run_id != logged.info.run_id
    assert replaced.data.tags["harness.verdict"] == "fail"
    assert len(client.search_model_versions("name='small-tiny-lora'")) == 1  # a failed gate registers nothing

    # A manifest written after the run can be fitted to its results: passing on it promotes nothing.
    lenient = write_yaml(tmp_path / "lenient.yaml", {"criteria": [
        {"task": "keywords", "metric": "error_rate", "candidate": "tiny-lora", "at_most": 0.6}]})
    code, _ = run_cli(monkeypatch, capsys, "gate", str(run.path), "--manifest", str(lenient))
    assert code in (0, None)
    run_cli(monkeypatch, capsys, "export", str(run.path))
    [later] = _runs(client, "small")
    assert later.data.tags["harness.verdict"] == "pass"
    assert len(client.search_model_versions("name='small-tiny-lora'")) == 1

    # A run with failed requests is never promoted, even where a gate allowing failures passes it.
    record = run.read_run()
    run.write_run(record.model_copy(update={"status": "incomplete"}))
    code, _ = run_cli(monkeypatch, capsys, "gate", str(run.path))
    assert code in (0, None)
    code, err = run_cli(monkeypatch, capsys, "export", str(run.path))
    assert code in (0, None), err
    [incomplete] = _runs(client, "small")
    assert incomplete.data.tags["harness.verdict"] == "pass" and incomplete.data.tags["harness.status"] == "incomplete"
    assert len(client.search_model_versions("name='small-tiny-lora'")) == 1


def test_an_unreachable_tracking_server_stops_the_run_before_any_work(small_suite, tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    code, err = run_cli(monkeypatch, capsys, "run", str(small_suite), "--results", str(results),
                        "--tracking-uri", "http://user:secret@127.0.0.1:9")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--tracking-uri" in lines[0] and "127.0.0.1:9" in lines[0]
    assert "secret" not in err
    assert not results.exists() or not any(results.iterdir())


def test_a_tracking_failure_after_the_run_keeps_the_run_and_export_logs_it_later(
        small_suite, tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"

    def store_goes_away(*args, **kwargs):
        raise OSError("database is locked")

    with monkeypatch.context() as patch:
        patch.setattr(tracking, "log_run", store_goes_away)
        code, err = run_cli(monkeypatch, capsys, "run", str(small_suite), "--results", str(results),
                            "--run-id", "kept", "--track")
    assert code == 1
    assert "MLflow logging failed: database is locked" in err and "harness export" in err
    run = RunDir(results / "kept")
    assert run.is_complete()
    code, err = run_cli(monkeypatch, capsys, "export", str(run.path))
    assert code in (0, None), err
    [logged] = _runs(MlflowClient(tracking_uri=tracking.local_uri(results)), "small")
    assert logged.data.tags["harness.run_id"] == "kept"


def test_export_refuses_a_folder_that_is_not_a_run(tmp_path, monkeypatch, capsys):
    code, err = run_cli(monkeypatch, capsys, "export", str(tmp_path))
    assert code == 2 and "not a run directory" in err


def test_only_adapters_a_criterion_judges_as_candidate_are_registered(tmp_path):
    """A run comparing two fine-tunes whose manifest gates only `ft-good` (and compares it with `ft-base`): its
    passing verdict says nothing for `ft-bad`, nor for the baseline, so neither is registered."""
    for name in ("ft-good", "ft-bad", "ft-base"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "adapter_config.json").write_text("{}")
    manifest = {"criteria": [{"task": "t", "metric": "exact_match", "candidate": "ft-good", "at_least": 0.5},
                             {"task": "t", "metric": "exact_match", "candidate": "ft-good",
                              "not_worse_than": "ft-base", "margin": 0.1}]}
    record = run_record(suite_name="sweep", suite_file=str(tmp_path / "suite.yaml"), manifest=manifest,
                        suite={"name": "sweep", "tasks": [{"task": "t"}],
                               "candidates": [{"name": n, "model": "m", "adapter": str(tmp_path / n)}
                                              for n in ("ft-good", "ft-bad", "ft-base")]})
    run = RunDir(tmp_path / "results" / "r1")
    run.path.mkdir(parents=True)
    run.write_run(record)
    run.write_metrics([])
    run.write_verdict({"passed": True, "counts": {"pass": 2}, "manifest": manifest,
                       "criteria": [{"criterion": "t exact_match of ft-good >= 0.5", "status": "pass"},
                                    {"criterion": "t exact_match of ft-good not worse than ft-base",
                                     "status": "pass"}]})
    said: list[str] = []
    out = tracking.log_run(run, TrackingSpec(register_adapters=True), tmp_path / "results", say=said.append)
    assert out.registered == ["sweep-ft-good/1"]
    assert sum("not registered: no criterion has it as candidate" in line for line in said) == 2

