"""Servers never outlive the harness, for real: `harness run` on a suite with two vLLM servers on this CPU, stopped by
SIGTERM, SIGINT or SIGHUP while it generates, exits 128 + the signal's number and leaves no process of either server
(nor of their process groups) behind; run.json says `interrupted`, and `--resume` completes the run with one
prediction per example. Needs the `cpu` extra, as tests/test_backends_vllm_server.py does."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness.store import RunDir
from tests.conftest import classification_task, require_vllm, write_yaml
from tests.processes import SIGNALS, default_signals, descendants, group_members, still_running, wait_for
from tests.test_pipeline import check_run_dir

require_vllm()
pytestmark = [pytest.mark.slow, pytest.mark.vllm]
SERVE = {"dtype": "float32", "max_model_len": 512, "max_lora_rank": 8, "cpu_kv_cache_gib": 1,
         "startup_timeout_s": 300}
N_TEST = 200


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_a_signal_mid_run_stops_every_server_and_resume_completes(tmp_path, talking_model, sig, leave_nothing):
    task = classification_task(tmp_path / "task", n_test=N_TEST, generation={"max_new_tokens": 6})
    # Two serve blocks: two servers, started together (the second may still be starting when the signal lands).
    suite = write_yaml(tmp_path / "suite.yaml", {
        "name": "signalled", "tasks": [str(task)], "bootstrap": {"resamples": 100},
        "candidates": [
            {"name": "first", "backend": "vllm", "model": str(talking_model), "endpoint": "completions",
             "concurrency": 1, "serve": SERVE},
            {"name": "second", "backend": "vllm", "model": str(talking_model), "endpoint": "completions",
             "concurrency": 1, "serve": {**SERVE, "max_model_len": 256}}]})
    results = tmp_path / "results"
    run_dir = results / "s"
    cmd = [sys.executable, "-m", "harness.cli", "run", str(suite), "--results", str(results), "--run-id", "s"]
    harness = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=default_signals)
    leave_nothing(harness, {})
    preds = run_dir / "predictions" / "first" / "keywords.jsonl"
    wait_for(lambda: (preds.is_file() and len(preds.read_text().splitlines()) >= 3) or harness.poll() is not None,
             600, "generation to start")
    assert harness.poll() is None, harness.communicate()[1]
    servers = [int(p.read_text()) for p in (run_dir / "logs").glob("*.pid")]
    procs = descendants(harness.pid)
    leave_nothing(harness, procs)
    assert len(servers) == 2 and set(servers) <= set(procs), "both servers run, started by the harness"

    harness.send_signal(sig)
    _, err = harness.communicate(timeout=180)
    assert harness.returncode == 128 + sig, err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"interrupted by {sig.name}: every server the harness started is stopped"), err
    assert f"--resume --run-id s --results {results}" in line
    assert still_running(procs) == [], "no process the harness started is left"
    assert [group_members(s) for s in servers] == [[], []], "nor any process of a server's group"
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "interrupted" and record["error"] == f"stopped by {sig.name}"
    kept = RunDir(run_dir).read_predictions("first", "keywords")
    assert 3 <= len(kept) < N_TEST and all(c.ok for c in kept), "the finished predictions are kept"

    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    check_run_dir(run_dir, suite)  # complete, and every example exactly once for each candidate
    assert {c.example_id: c.text for c in kept}.items() <= {
        c.example_id: c.text for c in RunDir(run_dir).read_predictions("first", "keywords")}.items()
