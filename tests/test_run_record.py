"""run.json as a typed record: what the pipeline writes reads back the same (credentials never stored); run
directories older harnesses wrote load, with defaults for what they lack and their suites upgraded; anything else
is one line naming run.json and the field, exit code 2 through the command line. Metric results carry the
confidence of their intervals, and reports print it."""

import json
import re
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.metrics import TaskMetrics
from harness.records import MetricResult
from harness.report import HEADLINE_LATENCY, markdown, terminal_tables
from harness.run_record import SCHEMA_VERSION
from harness.snapshots import manifest_of, suite_of
from harness.store import RunDir
from tests.helpers import run_record

ROOT = Path(__file__).resolve().parents[1]
SECRET = "hunter2secret"

# The suite snapshot of a schema-1 run.json: every backend's settings in each candidate, every detector's in a task.
SUITE_V1 = {
    "name": "s", "seed": 0, "tasks": [{"task": "t", "limit": None, "sample": None, "detector": {
        "name": "grounding", "model": None, "url": None, "api_key_env": None, "tolerance": 0.2, "threshold": 0.5}}],
    "candidates": [
        {"name": "local", "model": "m", "adapter": None, "backend": "hf", "url": None, "api_key_env": None,
         "endpoint": "chat", "few_shot": 2, "chat": None, "batch_size": 4, "concurrency": 4, "timeout_s": 120.0,
         "max_retries": 3, "dtype": "auto", "cost_per_hour": 0.0, "serve": {"replicas": 1}, "finetune": None,
         "tasks": None, "prompts": {}},
        {"name": "served", "model": "m", "adapter": None, "backend": "vllm", "url": None, "api_key_env": None,
         "endpoint": "chat", "few_shot": 0, "chat": None, "batch_size": 8, "concurrency": 16, "timeout_s": 60.0,
         "max_retries": 1, "dtype": "auto", "cost_per_hour": 2.5, "serve": {"max_lora_rank": 32},
         "finetune": None, "tasks": None, "prompts": {}}],
    "bootstrap": {"resamples": 1000, "confidence": 0.9}, "allow_overlap": False, "manifest": None}

# run.json as the harness wrote it in schema 1 (before backends owned their options): no machine, dtypes,
# in-process switch, adapter probes nor prompting yet.
RUN_V1 = {
    "schema_version": 1, "run_id": "20261123T101500-s", "status": "complete", "suite_name": "s",
    "suite_file": "/data/suites/s.yaml", "suite_sha256": "5" * 64, "suite": SUITE_V1,
    "tasks": {"t": {"version": 1, "kind": "grounded_qa", "file": "/data/tasks/t/task.yaml", "task_sha256": "6" * 64,
                    "data_sha256": {"/data/tasks/t/test.jsonl": "7" * 64}, "n_test": 40, "n_train": 0,
                    "limit": None, "sample": None, "metrics": ["token_f1", "hallucination_rate"],
                    "detector": {"name": "grounding", "version": "2", "tolerance": 0.2, "threshold": 0.5}}},
    "seed": 0, "bootstrap": {"resamples": 1000, "confidence": 0.9},
    "versions": {"python": "3.11.9", "harness": "0.1.0", "numpy": "2.1.0"}, "git_revision": "8e2b33c",
    "started_at": "2026-11-23T10:15:00+00:00", "finished_at": "2026-11-23T10:19:41+00:00",
    "timings_s": {"local/t": 31.2, "served/t": 12.9, "scoring": 1.4}, "manifest": None,
    "data_check": [{"task": "t", "sizes": {"train": 0, "test": 40}, "exact_duplicates": {"train": 0, "test": 0},
                    "near_duplicates": {"train": 0, "test": 1}, "overlap": 0, "overlap_ids": [],
                    "length_unit": "words", "lengths": {"train": {}, "test": {"mean": 21.5, "p50": 20.0,
                                                                             "p95": 35.1, "max": 41}},
                    "labels": None, "imbalance": None, "warnings": ["test: 0 exact and 1 near duplicates"],
                    "blocking": []}],
    "adapters": {}, "failed_requests": 0}


def test_a_record_reads_back_as_written_without_credentials(tmp_path):
    url = f"http://user:{SECRET}@127.0.0.1:9/v1"
    record = run_record(suite={"name": "s", "tasks": [{"task": "qa"}],
                               "candidates": [{"name": "c", "model": "m", "backend": "openai", "url": url}]},
                        status="failed", error=f"{url}: connection refused", failed_requests=None)
    run = RunDir(tmp_path)
    run.write_run(record)
    assert SECRET not in run.run_json.read_text()
    back = run.read_run()
    assert back.error == "http://127.0.0.1:9/v1: connection refused"
    assert suite_of(back, run.run_json).candidates[0].options.url == "http://127.0.0.1:9/v1"
    assert back.model_copy(update={"suite": record.suite, "error": record.error}) == record
    assert back.schema_version == SCHEMA_VERSION and back.tasks["qa"].n_test == 10 and back.status == "failed"


def test_a_schema_1_run_reads_with_defaults_and_its_suite_upgraded(tmp_path):
    run = RunDir(tmp_path)
    run.run_json.write_text(json.dumps(RUN_V1))
    record = run.read_run()
    assert record.schema_version == 1 and record.status == "complete" and record.failed_requests == 0
    assert record.machine.native_dtype is None and record.dtypes == {} and record.in_process is False
    assert record.adapter_probes == {} and record.prompting == {} and record.error is None
    assert record.tasks["t"].detector is not None and record.tasks["t"].detector.version == "2"
    assert record.data_check[0].near_duplicates["test"] == 1 and record.data_check[0].lengths["test"]["max"] == 41
    assert manifest_of(record, run.run_json) is None
    with pytest.raises(HarnessError, match=r"\(suite\.tasks\.0\.detector\.model: not a setting"):
        suite_of(record.model_copy(update={"schema_version": 2}), run.run_json)  # not a suite as written …
    suite = suite_of(record, run.run_json)  # … until upgraded
    local, served = suite.candidates
    assert local.backend == "hf" and local.options.batch_size == 4 and local.few_shot == 2
    assert served.backend == "vllm" and served.options.serve.max_lora_rank == 32 and served.cost_per_hour == 2.5
    assert suite.tasks[0].detector.tolerance == 0.2
    # and the snapshot a run writes now validates as it is
    assert suite_of(record.model_copy(update={"schema_version": 2, "suite": suite.model_dump(mode="json")}),
                    run.run_json) == suite


def test_the_first_harnesses_run_json_reads_too(tmp_path):
    # The first run.json had no manifest, data check, adapters nor detector: each takes its default.
    first = {k: v for k, v in RUN_V1.items() if k not in ("manifest", "data_check", "adapters")}
    first["tasks"] = {"t": {k: v for k, v in RUN_V1["tasks"]["t"].items() if k != "detector"}}
    (tmp_path / "run.json").write_text(json.dumps(first))
    record = RunDir(tmp_path).read_run()
    assert record.manifest is None and record.data_check == [] and record.adapters == {}
    assert record.tasks["t"].detector is None and record.timings_s["scoring"] == 1.4


@pytest.mark.parametrize("kept", sorted((ROOT / "benchmarks" / "results" / "runs").glob("*/run.json")),
                         ids=lambda p: p.parent.name)
def test_schema_2_runs_kept_as_evidence_read_with_their_metrics(kept):
    """Real run directories of an older harness (schema 2): record, suite, manifest and metrics all read, and
    metric rows written without a confidence take the run's."""
    run = RunDir(kept.parent)
    record = run.read_run()
    assert record.schema_version == 2 and record.status == "complete"
    assert record.machine.native_dtype in ("bfloat16", "float32")
    suite = suite_of(record, run.run_json)
    assert [c.name for c in suite.candidates] == [c["name"] for c in json.loads(kept.read_text())["suite"]
                                                  ["candidates"]]
    manifest_of(record, run.run_json)
    rows = json.loads(run.metrics_json.read_text())
    results = run.read_metrics()
    assert len(results) == len(rows) > 0 and "confidence" not in rows[0]
    assert {r.confidence for r in results} == {record.bootstrap.confidence}


def test_metric_rows_keep_their_confidence_and_older_rows_take_the_runs(tmp_path):
    run = RunDir(tmp_path)
    run.write_run(run_record(bootstrap={"resamples": 1000, "confidence": 0.9}))
    old = {"task": "qa", "candidate": "c", "metric": "e2e_ms_p99", "value": 300.0, "ci_low": 250.0, "ci_high": None,
           "n": 10, "higher_is_better": False}
    run.metrics_json.write_text(json.dumps([old, {**old, "metric": "token_f1", "value": None, "ci_low": None,
                                                  "confidence": 0.8}]))
    p99, f1 = run.read_metrics()
    assert p99.confidence == 0.9 and p99.ci_high == float("inf"), "no upper bound reaches any value"
    assert f1.confidence == 0.8 and f1.value != f1.value and f1.ci_low == float("-inf")


GOOD = run_record().model_dump(mode="json")
BAD_RECORDS = {
    "empty": ({}, "schema_version: Field required"),
    "not an object": ([1, 2], "Input should be a valid dictionary"),
    "a field of the wrong type": (GOOD | {"tasks": {"qa": GOOD["tasks"]["qa"] | {"n_test": "many"}}},
                                  "tasks.qa.n_test: Input should be a valid integer"),
    "an unknown status": (GOOD | {"status": "done"}, "status: Input should be 'running'"),
    "a newer schema": (GOOD | {"schema_version": SCHEMA_VERSION + 1},
                       f"schema {SCHEMA_VERSION + 1} is newer than this harness reads ({SCHEMA_VERSION})"),
    "a newer schema as text": (GOOD | {"schema_version": "9"}, "schema_version '9' is not a whole number"),
    "a schema as a float": (GOOD | {"schema_version": 9.0}, "schema_version 9.0 is not a whole number"),
    "a schema as true": (GOOD | {"schema_version": True}, "schema_version True is not a whole number"),
}


@pytest.mark.parametrize("case", list(BAD_RECORDS))
def test_what_is_not_a_run_record_is_one_line_naming_the_file_and_field(tmp_path, case):
    content, message = BAD_RECORDS[case]
    (tmp_path / "run.json").write_text(json.dumps(content))
    expected = f"{tmp_path / 'run.json'}: not a run record this harness can read ({message}"
    with pytest.raises(HarnessError, match=re.escape(expected)):
        RunDir(tmp_path).read_run()


def test_a_snapshot_that_is_not_a_suite_names_its_field_in_run_json(tmp_path):
    record = run_record(suite={"name": "s", "tasks": [{"task": "qa"}], "candidates": [{"name": "c"}]})
    with pytest.raises(HarnessError, match=re.escape(f"{tmp_path}: not a run record this harness can read "
                                                     "(suite.candidates.0.model: Field required)")):
        suite_of(record, tmp_path)


def harness(monkeypatch, capsys, *args: str) -> tuple[int, list[str]]:
    """The `harness` command in this process: exit code and stderr lines."""
    monkeypatch.setattr(sys, "argv", ["harness", *args])
    with pytest.raises(SystemExit) as info:
        main()
    return int(info.value.code), capsys.readouterr().err.strip().splitlines()


def _finished_run(path: Path) -> Path:
    run = RunDir(path)
    path.mkdir()
    run.write_run(run_record())
    run.write_metrics([MetricResult("qa", "c", "token_f1", 0.5, 0.4, 0.6, 10, True, 0.95)])
    return path


def test_compare_on_a_run_json_that_is_not_a_run_record_is_exit_2(tmp_path, monkeypatch, capsys):
    before, after = _finished_run(tmp_path / "a"), _finished_run(tmp_path / "b")
    assert harness(monkeypatch, capsys, "compare", str(before), str(after))[0] == 0
    (after / "run.json").write_text("{}")
    code, err = harness(monkeypatch, capsys, "compare", str(before), str(after))
    assert code == 2 and err == [f"error: {after / 'run.json'}: not a run record this harness can read "
                                 "(schema_version: Field required)"]


def test_compare_on_metric_rows_without_a_value_is_exit_2(tmp_path, monkeypatch, capsys):
    before, after = _finished_run(tmp_path / "a"), _finished_run(tmp_path / "b")
    rows = json.loads((after / "metrics.json").read_text())
    (after / "metrics.json").write_text(json.dumps([{k: v for k, v in r.items() if k != "value"} for r in rows]))
    code, err = harness(monkeypatch, capsys, "compare", str(before), str(after))
    assert code == 2 and err == [f"error: {after / 'metrics.json'}: not metric results this harness can read "
                                 "(0.value: Field required)"]


def test_reports_print_the_runs_confidence_level():
    record = run_record(bootstrap={"resamples": 1000, "confidence": 0.9})
    results = [MetricResult("qa", "c", metric, 0.5, 0.4, 0.6, 10, metric == "token_f1", 0.9)
               for metric in ("token_f1", *HEADLINE_LATENCY)]
    known = {"qa": TaskMetrics(("token_f1",))}
    text = markdown(record, {"c": 0.0}, results, known=known)
    assert "1000 resamples, 90% confidence" in text and "95%" not in text
    (table,) = terminal_tables(results, known)
    assert table.title == "qa (n=10, 90% bootstrap intervals)"
