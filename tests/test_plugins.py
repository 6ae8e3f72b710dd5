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

from tests.conftest import qa_task, write_yaml

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
