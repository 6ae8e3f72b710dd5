"""Bad input as a user meets it: the `harness` command as a subprocess, on copies of the shipped task, its data,
a suite and a manifest, broken on purpose (a list of the kinds users hit) and by Hypothesis mutations.

Whatever the input, the command never shows a traceback, writes nothing outside the results folder, never
shows or stores a credential, and leaves a complete-looking run directory only when it exits 0 or 1; exit
code 2 is exactly one `error:` line that names the file (or the option) at fault."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
SECRET = "hunter2secret"
MUTATION_EXAMPLES = int(os.environ.get("HARNESS_FUZZ_EXAMPLES", "12"))


def harness(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, errors="replace", timeout=300)


def make_case(root: Path, model: Path) -> Path:
    """A copy of the shipped support-qa task (its first 30 rows), a suite of two candidates on the test model,
    and a manifest; returns the suite file."""
    task_dir = root / "support-qa"
    task_dir.mkdir(parents=True)
    shutil.copy(ROOT / "tasks" / "support-qa" / "task.yaml", task_dir / "task.yaml")
    rows = (ROOT / "tasks" / "support-qa" / "qa.jsonl").read_text(encoding="utf-8").splitlines()[:30]
    (task_dir / "qa.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    task = yaml.safe_load((task_dir / "task.yaml").read_text())
    task["generation"]["max_new_tokens"] = 6
    (task_dir / "task.yaml").write_text(yaml.safe_dump(task, sort_keys=False))
    (root / "manifest.yaml").write_text(yaml.safe_dump({"confidence": 0.9, "criteria": [
        {"task": "support-qa", "metric": "token_f1", "candidate": "b", "not_worse_than": "a", "margin": 0.5},
        {"task": "support-qa", "metric": "hallucination_rate", "candidate": "a", "at_most": 0.99}]}, sort_keys=False))
    suite = root / "suite.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "fuzz", "seed": 0, "tasks": [{"task": "support-qa/task.yaml", "sample": 3}],
        "candidates": [{"name": "a", "model": str(model), "batch_size": 3},
                       {"name": "b", "model": str(model), "few_shot": 1, "chat": False}],
        "bootstrap": {"resamples": 100}, "manifest": "manifest.yaml"}, sort_keys=False))
    return suite


def files_outside(root: Path, results: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")
            if p.is_file() and results not in p.parents}


def check_outcome(proc: subprocess.CompletedProcess, root: Path, results: Path, before: dict[str, int],
                  names: tuple[str, ...]) -> None:
    shown = proc.stdout + proc.stderr
    assert "Traceback" not in shown, shown[-3000:]
    assert proc.returncode in (0, 1, 2), (proc.returncode, shown[-3000:])
    assert SECRET not in shown
    assert files_outside(root, results) == before, "wrote outside the results folder"
    for path in results.rglob("*") if results.is_dir() else []:
        if path.is_file() and path.suffix in (".json", ".jsonl", ".md", ".log", ".yaml"):
            assert SECRET not in path.read_text(errors="replace"), f"credential stored in {path}"
    runs = [json.loads(p.read_text()) for p in results.glob("*/run.json")] if results.is_dir() else []
    complete = [r for r in runs if r.get("status") == "complete"]
    if proc.returncode == 2:
        errors = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(errors) == 1 and errors[0].startswith("error: "), proc.stderr[-3000:]
        assert any(name in errors[0] for name in names), (names, errors[0])
        assert not complete and not list(results.glob("*/verdict.json")), "a failed run looks complete"
    else:
        assert len(complete) == 1 and (results / complete[0]["run_id"] / "metrics.json").is_file()


@pytest.fixture
def case(tmp_path, talking_model) -> Path:
    return make_case(tmp_path / "case", talking_model)


def _edit(path: Path, change) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _set(*keys, value):
    def change(data):
        node = data
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return change


def _null_input(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[4]["question"] = None
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


BROKEN = {
    "suite name with ../": ("suite.yaml", _set("name", value="../escape"), "suite.yaml: name"),
    "task name with ../": ("support-qa/task.yaml", _set("name", value="../../escape"), "task.yaml: name"),
    "absolute task name": ("support-qa/task.yaml", _set("name", value="/tmp/escape"), "task.yaml: name"),
    "credential in a URL": ("suite.yaml", _set("candidates", 0, value={
        "name": "a", "backend": "openai", "model": "m", "url": f"http://user:{SECRET}@127.0.0.1:9/v1"}),
        "cannot reach http://127.0.0.1:9/v1"),
    "unbalanced brace": ("support-qa/task.yaml", _set("prompt", "template", value="Knowledge: {knowledge"),
                         "task.yaml: prompt.template"),
    "negative seed": ("suite.yaml", _set("seed", value=-3), "suite.yaml: seed"),
    "negative batch size": ("suite.yaml", _set("candidates", 0, "batch_size", value=-1),
                            "suite.yaml: candidates.0.batch_size"),
    "boolean batch size": ("suite.yaml", _set("candidates", 0, "batch_size", value=True),
                           "suite.yaml: candidates.0: `batch_size` is a number, not true/false"),
    "infinite cost": ("suite.yaml", _set("candidates", 0, "cost_per_hour", value=float("inf")),
                      "suite.yaml: candidates.0.cost_per_hour"),
    "empty metric list": ("support-qa/task.yaml", _set("metrics", value=[]), "task.yaml: metrics"),
    "sample larger than the data": ("suite.yaml", _set("tasks", 0, "sample", value=5000), "suite.yaml: tasks.0.sample"),
    "unreachable threshold": ("manifest.yaml", _set("criteria", 1, "at_most", value=-0.5),
                              "manifest.yaml: criteria.1.at_most"),
    "better than itself": ("manifest.yaml", _set("criteria", 0, value={
        "task": "support-qa", "metric": "token_f1", "candidate": "a", "better_than": "a"}),
        "manifest.yaml: criteria.0"),
    "contradictory criteria": ("manifest.yaml", _set("criteria", value=[
        {"task": "support-qa", "metric": "token_f1", "candidate": "a", "at_least": 0.8},
        {"task": "support-qa", "metric": "token_f1", "candidate": "a", "at_most": 0.5}]), "manifest.yaml: criteria"),
    "null input in a row": ("support-qa/qa.jsonl", _null_input, "qa.jsonl"),
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_broken_input_is_one_line_and_exit_2(case, kind):
    target, change, expected = BROKEN[kind]
    path = case.parent / target
    if path.suffix == ".yaml":
        _edit(path, change)
    else:
        change(path)
    results = case.parent / "results"
    before = files_outside(case.parent, results)
    proc = harness(case.parent, "run", "suite.yaml", "--results", "results")
    check_outcome(proc, case.parent, results, before, (path.name,))
    assert proc.returncode == 2 and expected in proc.stderr, proc.stderr[-2000:]
    assert not results.exists(), "refused before the run directory exists"


def test_non_utf8_files_are_named(tmp_path, talking_model):
    for target in ("support-qa/task.yaml", "support-qa/qa.jsonl"):
        fresh = make_case(tmp_path / target.replace("/", "-"), talking_model)
        (fresh.parent / target).write_bytes(b"name: caf\xe9 \xff\xfe\n")
        proc = harness(fresh.parent, "run", "suite.yaml", "--results", "results")
        assert proc.returncode == 2 and "not a UTF-8 text file" in proc.stderr and Path(target).name in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_paths_and_run_ids_stay_inside_the_results_folder(case):
    (case.parent / "afile").write_text("x")
    for args, expected in ((("--run-id", "../outside"), "--run-id"), (("--run-id", "/tmp/outside"), "--run-id"),
                           (("--results", "afile/results"), "afile")):
        default_results = () if "--results" in args else ("--results", "results")
        proc = harness(case.parent, "run", "suite.yaml", *default_results, *args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and expected in lines[0], proc.stderr[-2000:]
    assert not (case.parent / "outside").exists() and not Path("/tmp/outside").exists()


def test_usage_errors_are_one_line(case):
    for args, expected in ((("run",), "'suite'"), (("run", "suite.yaml", "--no-such-option"), "--no-such-option"),
                           (("no-such-command",), "no-such-command"), (("gate",), "'run_dir'")):
        proc = harness(case.parent, *args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
        assert expected in lines[0]


def test_numeric_options_out_of_range_are_one_line(case):
    bench = ("bench", "suite.yaml", "--candidate", "tiny")
    for args, option in (((*bench, "--random-input-len", "-5"), "--random-input-len"),
                         ((*bench, "--warmup", "-1"), "--warmup"), ((*bench, "--output-len", "-3"), "--output-len"),
                         ((*bench, "--requests", "0"), "--requests"),
                         (("validate-detector", "--limit", "-1"), "--limit"),
                         (("validate-detector", "--resamples", "0"), "--resamples")):
        proc = harness(case.parent, *args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (args, proc.stderr)
        assert f"Invalid value for '{option}'" in lines[0] and "greater than or equal to" in lines[0], lines[0]
    for args, message in ((("--concurrency", ""), "names no level"), (("--rate", "nan"), "--rate: every value"),
                          (("--concurrency", "0,4"), "--concurrency: every value"),
                          (("--slo", "ttft=-5"), "positive number of milliseconds"),
                          (("--slo", "e2e=nan"), "positive number of milliseconds")):
        proc = harness(case.parent, *bench, *args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], (args, proc.stderr)
    assert not (case.parent / "results").exists()  # refused before any work


def test_gate_refuses_unfinished_runs_and_run_files_of_the_wrong_shape(case):
    results = case.parent / "results"
    proc = harness(case.parent, "run", "suite.yaml", "--results", "results", "--run-id", "r")
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    run_dir = results / "r"
    record = json.loads((run_dir / "run.json").read_text())
    for broken, expected in (({**record, "status": "running"}, "the run has not finished"),
                             ([record], "run.json: "), ({"status": "complete"}, "run.json: ")):
        (run_dir / "verdict.json").unlink(missing_ok=True)
        (run_dir / "run.json").write_text(json.dumps(broken))
        proc = harness(case.parent, "gate", "results/r")
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and expected in lines[0], proc.stderr[-2000:]
        assert not (run_dir / "verdict.json").exists(), "no verdict is written into a run that is not whole"
    (run_dir / "run.json").write_text(json.dumps(record))
    # gate recomputes the metrics from the predictions; compare reads metrics.json as it is.
    shutil.copytree(run_dir, results / "r2")
    (run_dir / "metrics.json").write_text(json.dumps({"not": "a list"}))
    proc = harness(case.parent, "compare", "results/r", "results/r2")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "metrics.json" in lines[0], proc.stderr[-2000:]


# Hypothesis mutations of the same files: a key removed or a value replaced by one of the kinds users write.
VALUES = st.sampled_from([-1, 0, 1, 10**12, -0.5, 1.5, float("inf"), True, False, None, "", "../escape",
                          "/tmp/escape-abs", "{", "}", "x" * 300, [], {}, "a", [1, 2],
                          f"http://user:{SECRET}@127.0.0.1:9/v1"])
FILES = ("suite.yaml", "manifest.yaml", "support-qa/task.yaml")


def _nodes(tree, path=()):
    """Every (path) to a value inside a YAML tree."""
    out = []
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += [(*path, k), *_nodes(v, (*path, k))]
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out += [(*path, i), *_nodes(v, (*path, i))]
    return out


@settings(max_examples=MUTATION_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_files_never_crash_leak_or_escape(tmp_path_factory, talking_model, data):
    root = tmp_path_factory.mktemp("mutant")
    suite = make_case(root, talking_model)
    target = data.draw(st.sampled_from(FILES), label="file")
    path = root / target
    tree = yaml.safe_load(path.read_text())
    where = data.draw(st.sampled_from(_nodes(tree)), label="where")
    parent = tree
    for key in where[:-1]:
        parent = parent[key]
    if data.draw(st.booleans(), label="delete") and isinstance(parent, dict):
        del parent[where[-1]]
    else:
        parent[where[-1]] = data.draw(VALUES, label="value")
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    results = root / "results"
    before = files_outside(root, results)
    proc = harness(root, "run", suite.name, "--results", "results")
    check_outcome(proc, root, results, before, (path.name,))
