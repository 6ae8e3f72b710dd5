"""The whole pipeline on the tiny local model: run directory, files and schemas, kill and resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from harness.config import load_suite
from harness.errors import HarnessError
from harness.generation import open_run
from harness.metrics import METRICS
from harness.pipeline import Pipeline, run_suite
from harness.plan import make_plan, plan_tasks
from harness.store import SCHEMA_VERSION, ResultsDir, RunDir
from tests.conftest import classification_task, write_yaml
from tests.fake_openai_server import FakeServer
from tests.helpers import remote_suite
from tests.talking_model import LEARNED_LABEL

pytestmark = pytest.mark.slow

LATENCY_METRICS = [name for name, m in METRICS.items() if m.automatic]
METRIC_KEYS = {"task", "candidate", "metric", "value", "ci_low", "ci_high", "n", "higher_is_better", "confidence"}


def check_run_dir(run_dir: Path, suite_file: Path) -> dict:
    """The files and schemas of a finished run directory (DESIGN.md)."""
    suite = load_suite(suite_file)
    tasks = plan_tasks(suite, suite_file)
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "complete" and run["schema_version"] == SCHEMA_VERSION
    for key in ("suite", "suite_sha256", "tasks", "versions", "seed", "git_revision", "started_at", "finished_at",
                "timings_s", "data_check"):
        assert key in run, key
    assert [r["task"] for r in run["data_check"]] == [t.name for t in tasks]
    assert run["versions"]["torch"] and run["versions"]["transformers"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert all(set(m) == METRIC_KEYS and m["confidence"] == run["bootstrap"]["confidence"] for m in metrics)
    names = {(m["task"], m["candidate"], m["metric"]) for m in metrics}
    for task in tasks:
        for cand in suite.candidates_of(task.name):
            ids = [ex.id for ex in task.data.test]
            preds = [json.loads(line) for line in
                     (run_dir / "predictions" / cand.name / f"{task.name}.jsonl").read_text().splitlines()]
            assert sorted(p["example_id"] for p in preds) == sorted(ids), "each example exactly once"
            assert run["tasks"][task.name]["n_test"] == len(ids)
            for metric in [*task.spec.metrics, *LATENCY_METRICS]:
                assert (task.name, cand.name, metric) in names
    for m in metrics:
        # A bound may not exist (null): a tail latency percentile of a dozen requests has no upper bound.
        if m["value"] is not None and m["ci_low"] is not None:
            assert m["ci_low"] - 1e-9 <= m["value"], m
        if m["value"] is not None and m["ci_high"] is not None:
            assert m["value"] <= m["ci_high"] + 1e-9, m
    rows = [json.loads(line) for line in (run_dir / "scores.jsonl").read_text().splitlines()]
    assert len(rows) == sum(len(t.data.test) * len(suite.candidates_of(t.name)) for t in tasks)
    report = (run_dir / "report.md").read_text()
    assert all(f"## {t.name}" in report for t in tasks)
    return {(m["task"], m["candidate"], m["metric"]): m for m in metrics}


def test_run_writes_a_complete_run_directory(small_suite, tmp_path):
    result = run_suite(small_suite, tmp_path / "results", run_id="r1")
    assert result.failed_requests == 0
    metrics = check_run_dir(result.run_dir, small_suite)
    assert metrics[("keywords", "tiny-zero", "accuracy")]["n"] == 12
    assert metrics[("qa", "tiny-fewshot", "token_f1")]["n"] == 6
    # Quality comes from what was predicted: recompute accuracy from the stored predictions.
    labels = json.loads((result.run_dir / "scores.jsonl").read_text().splitlines()[0])
    assert "predicted_label" in labels
    with pytest.raises(Exception, match="exists"):
        run_suite(small_suite, tmp_path / "results", run_id="r1")


def test_report_puts_latency_percentiles_and_cost_beside_quality(small_suite, tmp_path):
    data = yaml.safe_load(small_suite.read_text())
    data["candidates"][0]["cost_per_hour"] = 2.5
    small_suite.write_text(yaml.safe_dump(data))
    result = run_suite(small_suite, tmp_path / "results", run_id="cost")
    run = json.loads((result.run_dir / "run.json").read_text())
    metrics = {(m["task"], m["candidate"], m["metric"]): m for m in
               json.loads((result.run_dir / "metrics.json").read_text())}
    section = (result.run_dir / "report.md").read_text().split("## Latency and cost")[1].split("## Timings")[0]
    zero = section.split("### keywords")[1].split("###")[0]
    row = next(line for line in zero.splitlines() if line.startswith("| tiny-zero |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    accuracy = metrics[("keywords", "tiny-zero", "accuracy")]
    assert cells[1] == f"{accuracy['value']:.3f} [{accuracy['ci_low']:.3f}, {accuracy['ci_high']:.3f}]"
    assert cells[2] == " / ".join(f"{metrics[('keywords', 'tiny-zero', f'ttft_ms_p{q}')]['value']:.1f}"
                                  for q in (50, 90, 99))
    expected = 2.5 * run["timings_s"]["tiny-zero/keywords"] / 3600 / 12 * 1000
    assert float(cells[5]) == pytest.approx(expected, abs=1e-4) and expected > 0
    fewshot = next(line for line in zero.splitlines() if line.startswith("| tiny-fewshot |"))
    assert fewshot.rstrip(" |").endswith("–"), "no cost_per_hour, no cost"


def _quality(metrics: dict) -> dict:
    return {k: v["value"] for k, v in metrics.items() if k[2] not in LATENCY_METRICS}


def test_kill_and_resume_gives_the_same_metrics(tmp_path, talking_model):
    task = classification_task(tmp_path / "task", n_test=90, generation={"max_new_tokens": 12})
    suite = write_yaml(tmp_path / "suite.yaml", {
        "name": "killme", "tasks": [str(task)],
        "candidates": [{"name": "tiny", "model": str(talking_model), "batch_size": 1}],
        "bootstrap": {"resamples": 200}})
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "harness.cli", "run", str(suite), "--results", str(results)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([*cmd, "--run-id", "killed"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    preds = results / "killed" / "predictions" / "tiny" / "keywords.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not preds.is_file() or len(preds.read_text().splitlines()) < 10):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(preds.read_text().splitlines())
    assert 10 <= done_before < 90, "the kill must land part-way"
    assert json.loads((results / "killed" / "run.json").read_text())["status"] == "running"
    assert not (results / "killed" / "metrics.json").exists()

    resumed = subprocess.run([*cmd, "--resume", "--run-id", "killed"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    # Generated afresh, not taken from the cache the killed run filled: the answers must match on their own.
    whole = subprocess.run([*cmd, "--run-id", "whole", "--no-cache"], env=env, capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr
    killed_metrics = check_run_dir(results / "killed", suite)
    whole_metrics = check_run_dir(results / "whole", suite)
    assert _quality(killed_metrics) == _quality(whole_metrics)
    killed_preds = {c.example_id: c.text for c in RunDir(results / "killed").read_predictions("tiny", "keywords")}
    whole_preds = {c.example_id: c.text for c in RunDir(results / "whole").read_predictions("tiny", "keywords")}
    assert killed_preds == whole_preds
    # Each answer sits on its own example: the label the model learned for that example's keyword.
    rows = map(json.loads, (tmp_path / "task" / "test.jsonl").read_text().splitlines())
    texts = {row["id"]: row["text"] for row in rows}
    assert killed_preds == {i: LEARNED_LABEL[text.split()[-1]] for i, text in texts.items()}
    accuracy = killed_metrics[("keywords", "tiny", "accuracy")]["value"]
    assert 0 < accuracy < 1 and 0 < killed_metrics[("keywords", "tiny", "macro_f1")]["value"] < 1


def test_torn_last_line_is_dropped_on_resume(small_suite, tmp_path):
    result = run_suite(small_suite, tmp_path / "results", run_id="torn")
    preds = result.run_dir / "predictions" / "tiny-zero" / "keywords.jsonl"
    lines = preds.read_text().splitlines()
    preds.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:25])  # a kill mid-write
    record = json.loads((result.run_dir / "run.json").read_text())
    record["status"] = "running"
    (result.run_dir / "run.json").write_text(json.dumps(record))
    again = run_suite(small_suite, tmp_path / "results", run_id="torn", resume=True)
    check_run_dir(again.run_dir, small_suite)


def test_failed_requests_are_kept_and_retried_on_resume(tmp_path):
    task = classification_task(tmp_path / "task", n_test=6)
    with FakeServer(faults=[500] * 4, pieces=("billing",)) as server:
        suite = remote_suite(tmp_path / "suite.yaml", "flaky", task, server.url)
        first = run_suite(suite, tmp_path / "results", run_id="f")
        assert first.failed_requests == 4
        assert json.loads((first.run_dir / "run.json").read_text())["status"] == "incomplete"
        errors = [c for c in RunDir(first.run_dir).read_predictions("remote", "keywords") if not c.ok]
        assert len(errors) == 4 and all("HTTP 500" in c.error for c in errors)
        second = run_suite(suite, tmp_path / "results", run_id="f", resume=True)
    assert second.failed_requests == 0
    metrics = check_run_dir(second.run_dir, suite)
    assert metrics[("keywords", "remote", "accuracy")]["value"] == pytest.approx(2 / 6)  # "billing" is 1 label in 3
    assert len(server.requests) == 10


def _disk_full(monkeypatch, stage: str) -> None:
    """A disk that fills (a fault a real disk gives only when it happens to fill), raised as the OS raises
    it, with no file name. "generation": the sixth appended prediction fails to reach the disk. "scoring":
    every file written whole from scoring on fails, run.json included."""
    import errno

    import harness.json_files
    import harness.store

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    if stage == "generation":
        synced, real_fsync = [], harness.json_files.os.fsync

        def fsync(fd):
            if len(synced) == 5:
                full()
            synced.append(fd)
            real_fsync(fd)

        monkeypatch.setattr(harness.json_files.os, "fsync", fsync)
    else:
        real_write_metrics = harness.store.RunDir.write_metrics

        def write_metrics(self, results):
            monkeypatch.setattr(harness.json_files.tempfile, "mkstemp", full)
            real_write_metrics(self, results)

        monkeypatch.setattr(harness.store.RunDir, "write_metrics", write_metrics)


@pytest.mark.parametrize(("stage", "status"), [("generation", "failed"), ("scoring", "running")])
def test_a_disk_that_fills_mid_run_is_one_line_and_resume_completes(small_suite, tmp_path, monkeypatch, capsys,
                                                                     stage, status):
    """After the run directory exists: exit 2 with one line naming the file, the run not complete-looking
    (marked failed where run.json can still be written) and refused by gate, every finished prediction
    kept, and --resume completes with each example once."""
    from tests.test_cli import run_cli

    results = tmp_path / "results"
    with monkeypatch.context() as faulty:
        _disk_full(faulty, stage)
        code, err = run_cli(faulty, capsys, "run", str(small_suite), "--results", str(results), "--run-id", "full")
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    written = "predictions/tiny-zero/keywords.jsonl" if stage == "generation" else "metrics.json"
    assert f"{written}: No space left on device" in lines[0] and "--resume" in lines[0], lines[0]
    record = json.loads((results / "full" / "run.json").read_text())
    assert record["status"] == status
    kept = sum(len(RunDir(results / "full").read_predictions(c, t)) for c in ("tiny-zero", "tiny-fewshot")
               for t in ("keywords", "qa"))
    # generation: the five synced, and the sixth, written but not confirmed on disk, may be there too
    assert kept in ((5, 6) if stage == "generation" else (2 * (12 + 6),))
    assert not (results / "full" / "metrics.json").exists() and not list((results / "full").glob(".*.tmp"))
    code, err = run_cli(monkeypatch, capsys, "gate", str(results / "full"))
    assert code == 2 and status in err
    code, err = run_cli(monkeypatch, capsys, "run", str(small_suite), "--results", str(results), "--run-id", "full",
                        "--resume")
    assert code in (0, None), err
    check_run_dir(results / "full", small_suite)


def test_resume_refuses_a_changed_suite(small_suite, tmp_path):
    run_suite(small_suite, tmp_path / "results", run_id="x")
    data = yaml.safe_load(small_suite.read_text())
    data["seed"] = 99
    small_suite.write_text(yaml.safe_dump(data))
    with pytest.raises(Exception, match="suite file changed"):
        run_suite(small_suite, tmp_path / "results", run_id="x", resume=True)


def test_gate_and_resume_refuse_a_task_file_or_data_changed_since_the_run(small_suite, tmp_path, monkeypatch,
                                                                         capsys):
    """A finished run is judged with the task it was asked: a prompt, a metric or a reference changed afterwards, or
    rows rewritten under the same ids, would score its answers against what they never answered."""
    from tests.test_cli import run_cli

    result = run_suite(small_suite, tmp_path / "results", run_id="x")
    task_file = tmp_path / "tasks" / "keywords" / "task.yaml"
    for changed, original in ((task_file, task_file.read_text()), (task_file.parent / "test.jsonl", None)):
        before = changed.read_text()
        changed.write_text(before.replace("Pick one of", "Choose one of") if original else
                           before.replace('"text": "', '"text": "note: '))
        assert changed.read_text() != before
        what = "task file" if original else "task's data"
        code, err = run_cli(monkeypatch, capsys, "gate", str(result.run_dir), "--manifest", str(_criteria(tmp_path)))
        assert code == 2 and f"{task_file}: the {what} changed since run x;" in err, err
        with pytest.raises(HarnessError, match=f"the {what} changed since run x started"):
            run_suite(small_suite, tmp_path / "results", run_id="x", resume=True)
        changed.write_text(before)
    code, _ = run_cli(monkeypatch, capsys, "gate", str(result.run_dir), "--manifest", str(_criteria(tmp_path)))
    assert code in (0, 1)


def test_run_with_a_manifest_gates_and_gate_agrees(small_suite, tmp_path, monkeypatch, capsys):
    from tests.test_cli import run_cli

    data = yaml.safe_load(small_suite.read_text())
    data["manifest"] = {"confidence": 0.95, "criteria": [
        {"task": "keywords", "metric": "error_rate", "candidate": "tiny-zero", "at_most": 0.5},
        # The median: a bound on a p95 needs 72 requests and these tasks have 12 and 6.
        {"task": "*", "metric": "e2e_ms_p50", "candidate": "tiny-zero", "at_most": 60000},
        {"task": "keywords", "metric": "accuracy", "candidate": "tiny-fewshot", "at_most": 0.2},
    ]}
    small_suite.write_text(yaml.safe_dump(data))
    results = tmp_path / "results"
    code, _ = run_cli(monkeypatch, capsys, "run", str(small_suite), "--results", str(results), "--run-id", "g")
    assert code == 1, "the test model gets most labels right, so accuracy at most 0.2 fails"
    verdict = json.loads((results / "g" / "verdict.json").read_text())
    assert verdict["passed"] is False
    statuses = [c["status"] for c in verdict["criteria"]]
    assert statuses[:3] == ["pass", "pass", "pass"] and statuses[3] == "fail"
    assert (results / "g" / "report.md").read_text().split("\n## ")[1].startswith("Verdict: NOT PASSED")
    comparisons = json.loads((results / "g" / "comparisons.json").read_text())
    assert {(c["task"], c["candidate"], c["baseline"]) for c in comparisons} == {
        ("keywords", "tiny-fewshot", "tiny-zero"), ("qa", "tiny-fewshot", "tiny-zero")}
    assert all(c["ci_low"] <= c["delta"] <= c["ci_high"] for c in comparisons)

    # `harness gate` on the same run with a manifest that passes: exit 0, and the same figures.
    passing = write_yaml(tmp_path / "pass.yaml", {"criteria": data["manifest"]["criteria"][:2]})
    code, _ = run_cli(monkeypatch, capsys, "gate", str(results / "g"), "--manifest", str(passing))
    assert code == 0
    regated = json.loads((results / "g" / "verdict.json").read_text())
    assert regated["criteria"] == verdict["criteria"][:3]
    code, _ = run_cli(monkeypatch, capsys, "gate", str(results / "g"))
    assert code == 1

    bad = write_yaml(tmp_path / "bad.yaml", {"criteria": [
        {"task": "keywords", "metric": "bleu", "candidate": "tiny-zero", "at_least": 1}]})
    code, err = run_cli(monkeypatch, capsys, "gate", str(results / "g"), "--manifest", str(bad))
    assert code == 2 and "bad.yaml: criteria.0.metric" in err
    code, err = run_cli(monkeypatch, capsys, "gate", str(tmp_path), "--manifest", str(passing))
    assert code == 2 and "not a run directory" in err


def test_manifest_file_named_in_the_suite_and_a_run_without_predictions(small_suite, tmp_path, monkeypatch, capsys):
    from tests.test_cli import run_cli

    write_yaml(small_suite.parent / "criteria.yaml", {"criteria": [
        {"task": "keywords", "metric": "error_rate", "candidate": "tiny-zero", "at_most": 0.5}]})
    data = yaml.safe_load(small_suite.read_text())
    data["manifest"] = "criteria.yaml"
    small_suite.write_text(yaml.safe_dump(data))
    run_plan = make_plan(small_suite)
    assert run_plan.manifest is not None and run_plan.manifest.criteria[0].metric == "error_rate"

    # A run directory whose generation never produced a prediction cannot be gated.
    results = tmp_path / "results"
    run_dir = open_run(ResultsDir(results), run_plan, "empty", resume=False)
    run_dir.write_run(Pipeline(run_plan, results)._record(run_dir, "running", "now", {}))
    code, err = run_cli(monkeypatch, capsys, "gate", str(run_dir.path))
    assert code == 2 and "the run has no predictions" in err


@pytest.mark.parametrize("run_id", ["../escape", "/tmp/elsewhere", "a/b", ".hidden"])
def test_a_run_id_that_would_leave_the_results_folder_is_refused(small_suite, tmp_path, monkeypatch, capsys, run_id):
    from tests.test_cli import run_cli

    code, err = run_cli(monkeypatch, capsys, "run", str(small_suite), "--results", str(tmp_path / "results"),
                        "--run-id", run_id)
    assert code == 2 and "a run id is a plain folder name" in err
    assert not (tmp_path / "escape").exists() and not (tmp_path / "results").exists()


def test_gate_refuses_a_run_that_has_not_finished(small_suite, tmp_path, monkeypatch, capsys):
    from tests.test_cli import run_cli

    result = run_suite(small_suite, tmp_path / "results", run_id="r")
    run = RunDir(result.run_dir)
    record = run.read_run()
    run.write_run(record.model_copy(update={"status": "running"}))
    verdict_before = run.verdict_json.read_bytes() if run.verdict_json.is_file() else None
    code, err = run_cli(monkeypatch, capsys, "gate", str(run.path), "--manifest", str(_criteria(tmp_path)))
    assert code == 2 and "has not finished (status 'running')" in err
    assert (run.verdict_json.read_bytes() if run.verdict_json.is_file() else None) == verdict_before
    run.write_run(record)
    code, _ = run_cli(monkeypatch, capsys, "gate", str(run.path), "--manifest", str(_criteria(tmp_path)))
    assert code in (0, 1) and run.verdict_json.is_file()


def _criteria(tmp_path: Path) -> Path:
    return write_yaml(tmp_path / "criteria.yaml", {"criteria": [
        {"task": "keywords", "metric": "error_rate", "candidate": "tiny-zero", "at_most": 0.5}]})


def test_resume_refuses_a_manifest_other_than_the_runs_own(tmp_path, monkeypatch, capsys):
    """run.json's manifest is the one promotion trusts: a resume may not replace it by one written after seeing the
    results (the suite's manifest file edited, or `--resume --manifest X`), which would turn a fail into a pass
    without new evidence. One line, exit 2, naming the manifest; the same manifest resumes as before."""
    from tests.test_cli import run_cli

    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "test.jsonl").write_text(
        "".join(json.dumps({"id": f"e{i}", "q": f"q{i}", "r": "yes"}) + "\n" for i in range(30)))
    write_yaml(tmp_path / "t" / "task.yaml", {
        "name": "t", "kind": "generation", "prompt": {"template": "{q}"}, "metrics": ["exact_match"],
        "data": {"test": "test.jsonl", "id": "id", "inputs": {"q": "q"}, "reference": "r"}})
    strict = {"criteria": [{"task": "t", "metric": "exact_match", "candidate": "c", "at_least": 0.9}]}
    lenient = {"criteria": [{"task": "t", "metric": "exact_match", "candidate": "c", "at_most": 0.5}]}
    manifest = write_yaml(tmp_path / "manifest.yaml", strict)
    other = write_yaml(tmp_path / "lenient.yaml", lenient)
    results = tmp_path / "results"
    with FakeServer(pieces=("no",)) as server:
        suite = write_yaml(tmp_path / "suite.yaml", {
            "name": "s", "tasks": ["t/task.yaml"], "manifest": "manifest.yaml", "bootstrap": {"resamples": 200},
            "candidates": [{"name": "c", "model": "m", "backend": "openai", "url": server.url}]})
        first = run_suite(suite, results, run_id="r1")
        assert [v.status for v in first.verdicts] == ["fail"]
        again = run_suite(suite, results, run_id="r1", resume=True)  # the run's own manifest: resumes
        assert [v.status for v in again.verdicts] == ["fail"]
        capsys.readouterr()
        code, err = run_cli(monkeypatch, capsys, "run", str(suite), "--results", str(results), "--run-id", "r1",
                            "--resume", "--manifest", str(other))
        assert code == 2 and len(err.splitlines()) == 1 and f"the manifest ({other}) differs" in err, err
        write_yaml(manifest, lenient)  # the suite's own manifest file, edited after seeing the results
        code, err = run_cli(monkeypatch, capsys, "run", str(suite), "--results", str(results), "--run-id", "r1",
                            "--resume")
        assert code == 2 and f"the manifest ({manifest}) differs" in " ".join(err.split()), err
    run = RunDir(results / "r1")
    assert [(c["at_least"], c["at_most"]) for c in run.read_run().manifest["criteria"]] == [(0.9, None)]
    assert run.read_verdict()["passed"] is False
