"""Extensions from outside the package: tests/plugin_example is a separate distribution that adds one extension
of each kind through entry points. Installed (pip, into a folder on the path) it runs in a suite like a
built-in one, its version goes into run.json, and a plugin that fails to import is one line naming it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.store import ResultsDir, RunDir
from tests.conftest import qa_task, write_yaml
from tests.helpers import traffic_log

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example package pip-installed into a folder of its own (built from a copy: nothing written in tests/)."""
    work = tmp_path_factory.mktemp("plugin")
    source = Path(shutil.copytree(ROOT / "tests" / "plugin_example", work / "src"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(work / "site"), str(source)], check=True, timeout=300)
    return work / "site"


def harness(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_an_installed_package_adds_a_backend_and_a_detector(installed, tmp_path):
    task = qa_task(tmp_path / "qa", n=12)
    suite = write_yaml(tmp_path / "suite.yaml", {
        "name": "plugged", "tasks": [{"task": str(task), "detector": {"name": "long_answers", "max_words": 3}}],
        "candidates": [{"name": "short", "model": "canned", "backend": "canned", "answer": "Paris."},
                       {"name": "long", "model": "canned", "backend": "canned", "answer": "It is not known today."}],
        "bootstrap": {"resamples": 200}})
    proc = harness(installed, tmp_path, "run", str(suite), "--results", str(tmp_path / "r"), "--run-id", "x")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads((tmp_path / "r" / "x" / "run.json").read_text())
    assert run["versions"]["harness-plugin-example"] == "0.3.1"
    assert run["tasks"]["qa"]["detector"] == {"name": "long_answers", "version": "1", "max_words": 3}
    rates = {r["candidate"]: r["value"] for r in json.loads((tmp_path / "r" / "x" / "metrics.json").read_text())
             if r["metric"] == "hallucination_rate"}
    assert rates == {"short": 0.0, "long": 1.0}
    # A setting the plugin's backend does not have is refused like a built-in's, naming the field.
    bad = write_yaml(tmp_path / "bad.yaml", {"name": "bad", "tasks": [str(task)], "candidates": [
        {"name": "c", "model": "canned", "backend": "canned", "temperature": 2}]})
    proc = harness(installed, tmp_path, "run", str(bad), "--results", str(tmp_path / "r"))
    assert proc.returncode == 2 and "bad.yaml: candidates.0.temperature" in proc.stderr, proc.stderr


def test_an_installed_metric_and_data_source_run_and_gate_like_built_in_ones(installed, tmp_path):
    task = write_yaml(tmp_path / "sums" / "task.yaml", {
        "name": "sums", "kind": "generation", "data": {"sums": {"n": 24, "seed": 5}, "inputs": {"question": "question"},
                                                     "reference": "answer"},
        "prompt": {"template": "{question}"}, "metrics": ["exact_match", "answer_words"]})
    suite = write_yaml(tmp_path / "suite.yaml", {
        "name": "sums", "tasks": [str(task)],
        "candidates": [{"name": "terse", "model": "canned", "backend": "canned", "answer": "42"},
                       {"name": "wordy", "model": "canned", "backend": "canned", "answer": "it is forty two"}],
        "bootstrap": {"resamples": 200},
        "manifest": {"criteria": [{"task": "sums", "metric": "answer_words", "candidate": "terse", "at_most": 2},
                                  {"task": "sums", "metric": "answer_words", "candidate": "wordy", "at_most": 2}]}})
    proc = harness(installed, tmp_path, "run", str(suite), "--results", str(tmp_path / "r"), "--run-id", "x")
    assert proc.returncode == 1, proc.stderr[-3000:]  # wordy fails its criterion
    run = RunDir(tmp_path / "r" / "x")
    words = {r["candidate"]: r["value"] for r in json.loads(run.metrics_json.read_text())
             if r["metric"] == "answer_words"}
    assert words == {"terse": 1.0, "wordy": 4.0}
    verdicts = {c["candidate"]: c["status"] for c in json.loads(run.verdict_json.read_text())["criteria"]}
    assert verdicts == {"terse": "pass", "wordy": "fail"}
    record = json.loads(run.run_json.read_text())
    assert record["tasks"]["sums"]["n_test"] == 24
    assert list(record["tasks"]["sums"]["data_sha256"]) == ["sums:n=24,seed=5"]
    # The source's settings are checked like a built-in source's, named as the task wrote them.
    bad = write_yaml(tmp_path / "bad" / "task.yaml", {
        "name": "bad", "kind": "generation", "data": {"sums": {"n": 0}, "inputs": {"question": "question"}},
        "prompt": {"template": "{question}"}, "metrics": ["answer_words"]})
    bad_suite = write_yaml(tmp_path / "bad.yaml", {"name": "b", "tasks": [str(bad)], "candidates": [
        {"name": "c", "model": "canned", "backend": "canned"}]})
    proc = harness(installed, tmp_path, "run", str(bad_suite), "--results", str(tmp_path / "r"))
    assert proc.returncode == 2 and f"{bad}: data.sums.n" in proc.stderr, proc.stderr


def test_an_installed_drift_signal_is_watched_and_shows_its_rows_and_details(installed, tmp_path):
    import pandas as pd

    messages = pd.read_csv(ROOT / "tasks" / "banking77" / "test.csv").text.tolist()[:200]
    shouted = [m.upper() if i % 4 == 0 else m for i, m in enumerate(messages)]  # a quarter of the traffic shouts
    log = traffic_log(tmp_path / "t.jsonl", shouted, ["card_arrival"] * 200, per_day=200)
    suite = write_yaml(tmp_path / "suite.yaml", {
        "name": "watch", "tasks": ["banking77"], "candidates": [{"name": "c", "model": "smollm2-135m-instruct"}],
        "manifest": {"criteria": [{"task": "banking77", "metric": "accuracy", "candidate": "c", "at_least": 0.5}],
                     "monitor": {"resamples": 300, "rules": [{"signal": "shouting_rate", "at_most": 0.05}]}}})
    proc = harness(installed, tmp_path, "monitor", str(log), "--against", str(suite), "--results",
                   str(tmp_path / "results"))
    assert proc.returncode == 1, proc.stderr[-3000:]  # an alert
    [folder] = ResultsDir(tmp_path / "results").monitors()
    window = folder.read()["windows"][-1]
    reading = next(r for r in window["readings"] if r["signal"] == "shouting_rate")
    assert reading["status"] == "alert" and 0.15 < reading["value"] < 0.3
    assert window["examples"]["shouting_rate"] == [i + 1 for i in range(0, 200, 4)][:50]
    markdown = folder.report_md.read_text()
    words = [w["word"] for w in window["details"]["shouting_rate"]["words"]]
    assert len(words) == 20 and all(w.isupper() for w in words)
    assert "Words in capitals:" in markdown and all(f"| {w} |" in markdown for w in words)


def test_a_plugin_that_fails_to_import_is_one_line_naming_it(installed, tmp_path):
    site = Path(shutil.copytree(installed, tmp_path / "site"))
    (site / "harness_plugin_example" / "detector.py").write_text("raise ImportError('needs a library not here')\n")
    suite = write_yaml(tmp_path / "suite.yaml", {"name": "s", "tasks": [str(qa_task(tmp_path / "qa", n=12))],
                                                 "candidates": [{"name": "c", "model": "canned", "backend": "canned"}]})
    proc = harness(site, tmp_path, "run", str(suite), "--results", str(tmp_path / "r"))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert ("plugin 'long_answers' (harness.detectors entry point of harness-plugin-example, module "
            "harness_plugin_example.detector) failed to load: needs a library not here") in lines[0]
