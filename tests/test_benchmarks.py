"""The benchmarks keep what they measure: sides in alternating order, at least three repeats, one JSON file
per benchmark with figures, settings and the machine, an exit code that says whether the goal was met, and
a README that names every recorded file."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
SCRIPTS = sorted(p.stem for p in BENCHMARKS.glob("*.py") if p.stem != "record")


@pytest.fixture
def record(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.setenv("HARNESS_BENCH_RESULTS", str(tmp_path))
    sys.modules.pop("record", None)
    module = importlib.import_module("record")
    yield module
    sys.modules.pop("record", None)


def test_sides_alternate_which_goes_first(record):
    calls = []
    results, order = record.alternate({"a": lambda r: calls.append(("a", r)) or r,
                                       "b": lambda r: calls.append(("b", r)) or 10 * r}, 4, say=lambda _: None)
    assert order == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert calls == [("a", 0), ("b", 0), ("b", 1), ("a", 1), ("a", 2), ("b", 2), ("b", 3), ("a", 3)]
    assert results == {"a": [0, 1, 2, 3], "b": [0, 10, 20, 30]}
    with pytest.raises(SystemExit, match="at least 3 repeats"):
        record.alternate({"a": lambda r: r, "b": lambda r: r}, 2)


def test_a_missed_goal_is_written_then_exits_1(record, tmp_path):
    with pytest.raises(SystemExit) as info:
        record.write("demo", goal="x at most 1", met=False, figures={"x": record.spread([3.0, 1.0, 2.0])},
                     settings={"n": 1}, order=["a", "b"])
    assert info.value.code == 1
    saved = json.loads((tmp_path / "demo.json").read_text())
    assert saved["goal_met"] is False and saved["figures"]["x"] == {"median": 2.0, "min": 1.0, "max": 3.0,
                                                                    "repeats": [3.0, 1.0, 2.0]}
    assert saved["machine"]["cpu"]["cores"] == os.cpu_count() and saved["machine"]["native_dtype"] in (
        "bfloat16", "float32")
    record.write("demo", goal="x at most 5", met=True, figures={}, settings={})
    assert json.loads((tmp_path / "demo.json").read_text())["goal_met"] is True


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_benchmark_imports(script, record):
    """Imports only (main() is guarded): a benchmark that names something the harness no longer has fails here,
    not on the day someone measures."""
    sys.modules.pop(script, None)
    module = importlib.import_module(script)
    assert callable(module.main)


def test_bootstrap_benchmark_records_and_its_exit_code_is_its_verdict(tmp_path):
    env = {**os.environ, "HARNESS_BENCH_RESULTS": str(tmp_path)}
    done = subprocess.run([sys.executable, str(BENCHMARKS / "bootstrap_speed.py"), "--examples", "400",
                           "--resamples", "300", "--repeats", "3"], capture_output=True, text=True, env=env,
                          timeout=300)
    saved = json.loads((tmp_path / "bootstrap_speed.json").read_text())
    assert done.returncode == (0 if saved["goal_met"] else 1), done.stderr
    assert saved["run_order"] == ["harness accuracy", "harness macro-F1", "scipy accuracy"] * 1 + [
        "scipy accuracy", "harness macro-F1", "harness accuracy", "harness accuracy", "harness macro-F1",
        "scipy accuracy"]
    ratio = saved["figures"]["ratio_harness_accuracy_to_scipy"]
    assert len(ratio["repeats"]) == 3 and ratio["min"] <= ratio["median"] <= ratio["max"]
    assert saved["settings"]["examples"] == 400 and saved["figures"]["largest_interval_gap"] < 0.05


def test_the_readme_names_every_recorded_file_and_every_benchmark_has_one():
    readme = (ROOT / "README.md").read_text()
    recorded = sorted((BENCHMARKS / "results").glob("*.json"))
    for path in recorded:
        assert path.relative_to(ROOT).as_posix() in readme, path.name
    for script in SCRIPTS:
        assert list((BENCHMARKS / "results").glob(f"{script}*.json")), f"{script} has no recorded figures"


@pytest.mark.slow
def test_gate_soundness_runs_the_real_gate_on_every_kind_of_criterion(tmp_path):
    env = {**os.environ, "HARNESS_BENCH_RESULTS": str(tmp_path)}
    done = subprocess.run([sys.executable, str(BENCHMARKS / "gate_soundness.py"), "--repeats", "3"],
                          capture_output=True, text=True, env=env, timeout=600)
    saved = json.loads((tmp_path / "gate_soundness.json").read_text())
    assert done.returncode == (0 if saved["goal_met"] else 1), done.stderr
    figures = saved["figures"]
    assert {"at_least", "at_least, 24 examples", "at_most", "better_than by", "not_worse_than margin",
            "latency p95 at_most", "latency p95 better_than by", "human rating at_least",
            "judged metric, echoing judge", "judged metric, verdicts missing on bad answers",
            "corrected rate at_most, lenient judge + labels", "failed requests: hallucination at_most",
            "failed requests: latency p95 at_most", "worst slice at_least", "max gap between slices",
            "max gap between slices, macro_f1"} == set(figures)
    # A judge that only echoes its instructions gives no verdict: its metric can never pass, true or not.
    assert figures["judged metric, echoing judge"] == {"false_pass_rate": 0.0, "boundary_pass_rate": 0.0, "power": 0.0}
    # Where the truth holds by a clear margin the plain criteria pass in most runs (the gate is not just mute).
    assert figures["at_least"]["power"] > 0.5 and figures["better_than by"]["power"] > 0.5


def test_scale_monitor_times_the_real_cli_and_fits_the_growth_exponent(record):
    sys.modules.pop("scale_monitor", None)
    scale = importlib.import_module("scale_monitor")
    assert scale.exponent([10, 100, 1000], [2.0, 20.0, 200.0]) == pytest.approx(1.0)
    assert scale.exponent([10, 100], [1.0, 100.0]) == pytest.approx(2.0)
    out = scale.measure([200, 400], per_window=200)
    small, large = out["sizes"]["200"], out["sizes"]["400"]
    assert small["windows"] == 1 and large["windows"] == 3  # two days and the whole log
    # A child process that imported the harness and read the data: its own peak memory, not this process's.
    assert 0.05 < small["peak_rss_gib"] < 4 and small["exit_code"] in (0, 1) and small["wall_s"] > 0
    assert out["exponent"] == pytest.approx(scale.exponent([200, 400], [small["wall_s"], large["wall_s"]]), abs=1e-3)


@pytest.mark.slow
def test_scale_benchmark_quick_mode_records_each_part_with_its_growth(tmp_path):
    """The growth benchmark at tiny sizes (scoring; the dashboard where Chromium is installed; the monitor part is
    measured or skipped with its reason): each part's table has a positive time and memory per size, and fitted
    exponents. No figure is asserted: this machine's timings say nothing."""
    import shutil

    parts = ["scoring", "monitor"] + (["dashboard"] if shutil.which("chromium") else [])
    env = {**os.environ, "HARNESS_BENCH_RESULTS": str(tmp_path)}
    done = subprocess.run([sys.executable, str(BENCHMARKS / "scale.py"), "--quick", "--parts", *parts],
                          capture_output=True, text=True, env=env, timeout=900)
    saved = json.loads((tmp_path / "scale-quick.json").read_text())
    assert done.returncode == (0 if saved["goal_met"] else 1), done.stderr
    assert saved["settings"]["quick"] is True and set(saved["figures"]) == set(parts)
    tables = [saved["figures"]["scoring"]]
    if "dashboard" in parts:
        assert set(saved["figures"]["dashboard"]) == {"Scorecard", "Examples"}
        tables += saved["figures"]["dashboard"].values()
    for table in tables:
        assert [row["examples"] for row in table["rows"]] == sorted(row["examples"] for row in table["rows"])
        assert len(table["rows"]) >= 2 and set(table["exponents"]) == {"time", "memory"}
        for row in table["rows"]:
            assert all(row[key] > 0 for key in row), row
        assert isinstance(table["exponents"]["time"], float)
    scoring = saved["figures"]["scoring"]["rows"]
    assert all(r["peak_mib"] > r["added_mib"] > 0 for r in scoring)
    monitor = saved["figures"]["monitor"]
    assert "skipped" in monitor or monitor, monitor
