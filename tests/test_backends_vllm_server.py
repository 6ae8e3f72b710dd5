"""The vllm backend for real on this CPU: the harness starts one server per base model with the
adapters on it, logs into the run directory, stops it (no orphans), reports a failed start, and stops a
run whose server dies, which `--resume` then completes with a new server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from harness.errors import HarnessError
from harness.pipeline import run_suite
from harness.store import RunDir
from tests.conftest import classification_task, require_vllm, write_yaml
from tests.test_pipeline import check_run_dir

require_vllm()
pytestmark = [pytest.mark.slow, pytest.mark.vllm]
SERVE = {"dtype": "float32", "max_model_len": 512, "max_lora_rank": 8, "cpu_kv_cache_gib": 1,
         "startup_timeout_s": 300}


def _suite(tmp_path, talking_model, lora_adapter, n_test=9, serve=None, **cand):
    task = classification_task(tmp_path / "task", n_test=n_test, generation={"max_new_tokens": 6})
    serve = serve or SERVE
    return write_yaml(tmp_path / "suite.yaml", {
        "name": "served", "tasks": [str(task)],
        "candidates": [
            {"name": "base", "backend": "vllm", "model": str(talking_model), "endpoint": "completions",
             "serve": serve, **cand},
            {"name": "ft", "backend": "vllm", "model": str(talking_model), "adapter": str(lora_adapter),
             "endpoint": "completions", "serve": serve, **cand},
        ],
        "bootstrap": {"resamples": 100}})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_one_server_serves_base_and_adapter_and_is_stopped(tmp_path, talking_model, lora_adapter):
    suite = _suite(tmp_path, talking_model, lora_adapter)
    result = run_suite(suite, tmp_path / "results", run_id="r")
    check_run_dir(result.run_dir, suite)
    logs = sorted((result.run_dir / "logs").glob("vllm-*.log"))
    assert len(logs) == 1, "one server per base model"
    command = logs[0].read_text().splitlines()[0]
    assert f"ft={lora_adapter}" in command and "--enable-lora" in command
    pid = int(next((result.run_dir / "logs").glob("*.pid")).read_text())
    assert not _alive(pid), "the server must be stopped when the run ends"
    run = RunDir(result.run_dir)
    base = {c.example_id: c.text for c in run.read_predictions("base", "keywords")}
    tuned = {c.example_id: c.text for c in run.read_predictions("ft", "keywords")}
    probe = json.loads((result.run_dir / "run.json").read_text())["adapter_probes"]["ft"]
    assert probe["differing"] >= 1 and probe["probes"] == 8
    changed = [k for k in base if base[k] != tuned[k]]
    assert len(changed) * 2 >= len(base), f"the adapter must change most answers, changed only {changed}"


def test_a_served_adapter_that_changes_nothing_stops_the_run(tmp_path, talking_model, zero_lora_adapter):
    """The zeroed adapter is loaded by vLLM and answers exactly as the base on the same server: caught by the
    probe before any prediction, and the server is stopped."""
    suite = _suite(tmp_path, talking_model, zero_lora_adapter)
    with pytest.raises(HarnessError, match=r"candidate 'ft': the adapter .* exactly as its base"):
        run_suite(suite, tmp_path / "results", run_id="zero")
    run = tmp_path / "results" / "zero"
    assert json.loads((run / "run.json").read_text())["status"] == "failed"
    assert not (run / "predictions" / "ft").exists()
    assert not _alive(int(next((run / "logs").glob("*.pid")).read_text()))


def test_a_server_that_cannot_start_is_one_clear_error(tmp_path, talking_model, lora_adapter):
    suite = _suite(tmp_path, talking_model, lora_adapter, serve={**SERVE, "extra_args": ["--max-model-len", "999999"]})
    with pytest.raises(HarnessError, match=r"vLLM server for .* failed to start \(exit code \d+\): .*") as info:
        run_suite(suite, tmp_path / "results", run_id="bad")
    assert "999999" in str(info.value) or "max_model_len" in str(info.value).lower()
    record = json.loads((tmp_path / "results" / "bad" / "run.json").read_text())
    assert record["status"] == "failed"
    pid = int(next((tmp_path / "results" / "bad" / "logs").glob("*.pid")).read_text())
    assert not _alive(pid)


def test_server_killed_mid_run_then_resume_completes(tmp_path, talking_model, lora_adapter):
    suite = _suite(tmp_path, talking_model, lora_adapter, n_test=300, concurrency=1)
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "harness.cli", "run", str(suite), "--results", str(results), "--run-id", "k"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    preds = results / "k" / "predictions" / "base" / "keywords.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not preds.is_file() or len(preds.read_text().splitlines()) < 5):
        time.sleep(0.05)
    server_pid = int(next((results / "k" / "logs").glob("*.pid")).read_text())
    os.killpg(server_pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    assert "died mid-run" in err and "--resume" in err
    kept = RunDir(results / "k").read_predictions("base", "keywords")
    assert 5 <= len(kept) < 300 and all(c.ok for c in kept), "only real answers are kept"
    assert json.loads((results / "k" / "run.json").read_text())["status"] == "failed"

    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    check_run_dir(results / "k", suite)
    assert len(list((results / "k" / "logs").glob("vllm-*.log"))) == 2, "resume starts a new server"


def test_data_parallel_replicas_each_serve_requests(tmp_path, talking_model, lora_adapter):
    suite = _suite(tmp_path, talking_model, lora_adapter, n_test=8, serve={**SERVE, "replicas": 2})
    result = run_suite(suite, tmp_path / "results", run_id="dp")
    check_run_dir(result.run_dir, suite)
    logs = sorted((result.run_dir / "logs").glob("vllm-*.log"))
    assert len(logs) == 2
    for log in logs:
        assert log.read_text().count("POST /v1/completions") >= 4, "each replica answers its share"


def test_a_trained_adapter_is_served_by_vllm(tmp_path, talking_model, monkeypatch):
    """`harness run` trains the fine-tune (peft, Trainer) and serves that adapter next to its base on vLLM,
    which answers as the in-process backend does with the same adapter."""
    task = classification_task(tmp_path / "task", n_test=6, n_train=80, generation={"max_new_tokens": 6})
    finetune = {"task": "keywords", "max_steps": 30, "eval_steps": 10, "rank": 8, "batch_size": 8,
                "learning_rate": 1e-2, "scheduler": "constant", "precision": "float32"}
    suite = write_yaml(tmp_path / "suite.yaml", {
        "name": "trained", "tasks": [str(task)], "allow_overlap": True,
        "candidates": [
            {"name": "base", "backend": "vllm", "model": str(talking_model), "endpoint": "completions",
             "serve": SERVE},
            {"name": "ft", "backend": "vllm", "model": str(talking_model), "endpoint": "completions", "serve": SERVE,
             "finetune": finetune}],
        "bootstrap": {"resamples": 100}})
    monkeypatch.setenv("HARNESS_ADAPTERS", str(tmp_path / "store"))  # trained into the adapter store, not the run's
    result = run_suite(suite, tmp_path / "r", run_id="served")
    adapter = json.loads((result.run_dir / "run.json").read_text())["adapters"]["ft"]
    assert os.path.dirname(adapter) == str(tmp_path / "store")

    def texts(run_dir, cand):
        return {p.example_id: p.text.replace("\ufffd", "") for p in RunDir(run_dir).read_predictions(cand, "keywords")}

    served = texts(result.run_dir, "ft")
    base = texts(result.run_dir, "base")
    assert len(served) == 6 and served != base, "the trained adapter changes the answers"
    # The test model answers `login` with "account", no label; training on the labels fixes it.
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "task" / "test.jsonl").read_text().splitlines())}
    logins = [i for i, r in rows.items() if r["text"].endswith("login")]
    assert logins and all(base[i] == "account" and served[i] == "password" for i in logins)
    local_suite = write_yaml(tmp_path / "local.yaml", {
        "name": "local", "tasks": [str(task)],
        "candidates": [{"name": "ft", "model": str(talking_model), "adapter": adapter, "chat": False,
                        "dtype": "float32"}],
        "bootstrap": {"resamples": 100}})
    local = run_suite(local_suite, tmp_path / "r", run_id="local")
    assert texts(local.run_dir, "ft") == served


def test_every_server_of_a_run_starts_at_once(tmp_path, talking_model, lora_adapter):
    """Two server groups (two serve blocks): the second server is started before the first candidate
    generates anything, so its start-up overlaps the first's work instead of following it."""
    task = classification_task(tmp_path / "task", n_test=6, generation={"max_new_tokens": 4})
    suite = write_yaml(tmp_path / "suite.yaml", {
        "name": "two", "tasks": [str(task)], "bootstrap": {"resamples": 100},
        "candidates": [
            {"name": "first", "backend": "vllm", "model": str(talking_model), "endpoint": "completions",
             "serve": SERVE},
            {"name": "second", "backend": "vllm", "model": str(talking_model), "endpoint": "completions",
             "serve": {**SERVE, "max_model_len": 256}}]})
    result = run_suite(suite, tmp_path / "results", run_id="two")
    check_run_dir(result.run_dir, suite)
    logs = sorted((result.run_dir / "logs").glob("vllm-*.log"), key=lambda p: p.stat().st_ctime)
    assert len(logs) == 2
    first_answer = (result.run_dir / "predictions" / "first" / "keywords.jsonl").stat().st_ctime
    assert max(p.stat().st_ctime for p in (result.run_dir / "logs").glob("*.pid")) < first_answer, \
        "both servers were started before the first candidate generated anything"
    for log in logs:
        assert log.read_text().count("POST /v1/completions") >= 6, "each server answers its own candidate"


def test_a_server_behind_an_api_key_takes_it_from_the_environment_and_stores_it_nowhere(tmp_path, talking_model,
                                                                                        lora_adapter, monkeypatch):
    """The key lives in an environment variable: vLLM gets it as VLLM_API_KEY, the harness sends it, and it reaches
    neither the server's log nor run.json. On the command line (`extra_args`) it is refused before any work."""
    from harness.backends.vllm_server import ServerGroup, ServeSpec, VllmBackend, VllmOptions, VllmServer
    from harness.errors import ConfigError
    from harness.plan import make_plan

    secret = "sk-do-not-log-3141592653"
    monkeypatch.setenv("SERVE_KEY", secret)
    suite = _suite(tmp_path, talking_model, lora_adapter, n_test=4, serve={**SERVE, "api_key_env": "SERVE_KEY"})
    result = run_suite(suite, tmp_path / "results", run_id="r")
    assert result.failed_requests == 0, "the harness sends the key the server requires"
    for path in result.run_dir.rglob("*"):
        if path.is_file():
            assert secret not in path.read_text(errors="replace"), path
    # What made the run work: the server was started requiring the key, and the client sent it.
    server = VllmServer(ServerGroup(str(talking_model), "base", ServeSpec(**SERVE, api_key_env="SERVE_KEY")),
                        tmp_path / "logs")
    assert server.environment()["VLLM_API_KEY"] == secret and secret not in " ".join(server.command())
    client = VllmBackend([server], "base", VllmOptions()).client
    assert client.headers["Authorization"] == f"Bearer {secret}"
    leaky = _suite(tmp_path / "leaky", talking_model, lora_adapter,
                   serve={**SERVE, "extra_args": ["--api-key", secret]})
    with pytest.raises(ConfigError, match=r"candidates\.0\.serve\.extra_args.*serve\.api_key_env"):
        make_plan(leaky)
