"""Processes the harness starts never outlive it (harness/lifecycle.py): a signal stops every process group it
started, descendants in sessions of their own included, and the harness exits 128 + the signal's number; a second
signal kills at once rather than cutting the stopping short; handlers are put back. The stand-in server is a real
process tree (tests/lifecycle_child.py); the vLLM runs are tests/test_signals_vllm.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from harness import lifecycle
from tests.conftest import classification_task, write_yaml
from tests.processes import SIGNALS, command_line, default_signals, descendants, group_members, still_running, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _start_child(tmp_path, leave_nothing, *flags):
    """The stand-in harness, its server running: (process, server pid, every process under it)."""
    pid_file = tmp_path / "server.pid"
    child = subprocess.Popen([sys.executable, "-m", "tests.lifecycle_child", str(pid_file), *flags], cwd=ROOT,
                             stderr=subprocess.PIPE, text=True, preexec_fn=default_signals)
    leave_nothing(child, {})
    wait_for(lambda: pid_file.is_file() and pid_file.read_text().endswith("\n"), 30, "the server to start")
    server = int(pid_file.read_text())

    def ready():
        # The shell, its sleep (in the server's group) and the worker in a session of its own (group = its pid).
        procs = descendants(child.pid)
        return len(procs) >= 3 and any(pid == p.group != server for pid, p in procs.items())

    wait_for(ready, 30, "the server's children")
    procs = descendants(child.pid)
    leave_nothing(child, procs)
    return child, server, procs


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_a_signal_stops_the_whole_server_and_exits_with_its_code(tmp_path, sig, leave_nothing):
    child, server, procs = _start_child(tmp_path, leave_nothing)
    assert len({p.group for p in procs.values()}) == 2, "the server's own group and the worker's session"
    child.send_signal(sig)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 128 + sig, err
    assert err.strip().splitlines() == [f"interrupted by {sig.name}; every process the harness started is stopped"]
    assert still_running(procs) == [] and group_members(server) == []


def test_a_second_signal_kills_at_once_what_the_first_is_stopping(tmp_path, leave_nothing):
    """The server ignores SIGTERM, so the first signal's stop waits out its grace (30 s); a second signal kills
    every group then, instead of leaving the stop half-done."""
    child, server, procs = _start_child(tmp_path, leave_nothing, "--ignore-term")
    child.send_signal(signal.SIGTERM)
    time.sleep(2)
    assert child.poll() is None and len(still_running(procs)) == len(procs), "stopping: SIGTERM is ignored"
    asked = time.monotonic()
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=lifecycle.TERM_GRACE_S)
    assert still_running(procs) == [] and group_members(server) == [], "nothing left half-stopped"
    assert time.monotonic() - asked < 10, "killed at once, not after the grace period"
    assert child.returncode == 128 + signal.SIGTERM, err


def test_guards_put_the_handlers_back_and_leave_an_ignored_signal_ignored():
    def mine(signum, frame):
        pass

    before = {sig: signal.getsignal(sig) for sig in SIGNALS}
    try:
        signal.signal(signal.SIGTERM, mine)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
        with lifecycle.guard():
            with lifecycle.guard():
                assert signal.getsignal(signal.SIGTERM) not in (mine, signal.SIG_DFL)
                assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) not in (mine, signal.SIG_DFL), "the outer guard still holds"
        assert signal.getsignal(signal.SIGTERM) is mine and signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_a_guard_stops_what_it_started_and_nothing_started_before_it():
    """A server started outside (a test's module-wide one) outlives a run's guard; one left running inside does not."""
    outside = lifecycle.start(["sleep", "300"])
    try:
        with lifecycle.guard():
            inside = lifecycle.start(["sleep", "300"])
        assert inside.poll() is not None and group_members(inside.pid) == []
        assert outside.poll() is None and outside.pid in lifecycle.running()
    finally:
        lifecycle.stop(outside)
    assert outside.poll() is not None and outside.pid not in lifecycle.running()


@pytest.mark.slow
def test_a_signal_stops_torchrun_and_every_worker(tmp_path, talking_model, leave_nothing):
    """`harness finetune` on two processes: torchrun gives each worker a session of its own; SIGTERM to the harness
    stops the launcher and both workers, and no adapter is written."""
    task = classification_task(tmp_path / "task", n_test=12, n_train=200)
    finetune = {"task": "keywords", "max_steps": 100000, "eval_steps": 50000, "batch_size": 8,
                "distributed": {"processes": 2}}
    suite = write_yaml(tmp_path / "suite.yaml", {"name": "ddp", "tasks": [str(task)], "allow_overlap": True,
                                                 "candidates": [{"name": "ft", "model": str(talking_model),
                                                                 "finetune": finetune}]})
    store = tmp_path / "adapters"
    harness = subprocess.Popen([sys.executable, "-m", "harness.cli", "finetune", str(suite)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "HARNESS_ADAPTERS": str(store)}, preexec_fn=default_signals)
    leave_nothing(harness, {})

    def workers():
        return [pid for pid, p in descendants(harness.pid).items()
                if pid == p.group and "harness.finetune" in command_line(pid) and "torch.distributed" not in
                command_line(pid)]

    wait_for(lambda: len(workers()) == 2 or harness.poll() is not None, 300, "torchrun's two workers")
    assert harness.poll() is None, harness.stderr.read() if harness.stderr else ""
    procs = descendants(harness.pid)
    leave_nothing(harness, procs)
    harness.send_signal(signal.SIGTERM)
    _, err = harness.communicate(timeout=120)
    assert harness.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1] == "interrupted by SIGTERM; every process the harness started is stopped"
    assert still_running(procs) == []
    assert not [p for p in store.iterdir() if not p.name.startswith(".")], "no adapter written"


@pytest.mark.slow
def test_a_run_in_process_stopped_by_a_signal_is_interrupted_and_resumes(tmp_path, talking_model, leave_nothing):
    """The pipeline's side without vLLM: the run is marked interrupted naming the signal, the line names the command
    that completes it, and that command does, each example once."""
    import json

    from harness.store import RunDir
    from tests.test_pipeline import check_run_dir

    task = classification_task(tmp_path / "task", n_test=90, generation={"max_new_tokens": 12})
    suite = write_yaml(tmp_path / "suite.yaml", {
        "name": "stopme", "tasks": [str(task)], "bootstrap": {"resamples": 100},
        "candidates": [{"name": "tiny", "model": str(talking_model), "batch_size": 1}]})
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "harness.cli", "run", str(suite), "--results", str(results), "--run-id", "s"]
    harness = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=default_signals)
    leave_nothing(harness, {})
    preds = results / "s" / "predictions" / "tiny" / "keywords.jsonl"
    wait_for(lambda: (preds.is_file() and len(preds.read_text().splitlines()) >= 5) or harness.poll() is not None,
             120, "generation to start")
    harness.send_signal(signal.SIGTERM)
    _, err = harness.communicate(timeout=60)
    assert harness.returncode == 128 + signal.SIGTERM, err
    resume = f"harness run {suite} --resume --run-id s --results {results}"
    assert err.strip().splitlines()[-1] == (
        "interrupted by SIGTERM: every server the harness started is stopped and the finished predictions are kept in "
        f"{results / 's'}; `{resume}` completes the run")
    record = json.loads((results / "s" / "run.json").read_text())
    assert (record["status"], record["error"]) == ("interrupted", "stopped by SIGTERM")
    assert 5 <= len(RunDir(results / "s").read_predictions("tiny", "keywords")) < 90

    resumed = subprocess.run([sys.executable, "-m", "harness.cli", *resume.split()[1:]], capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    check_run_dir(results / "s", suite)
