"""A rerun of the demo with one metric added regenerates nothing: the demo suite run cold (an empty results folder,
so an empty generation cache, and an empty adapter store, so the fine-tune trains), then run again with `chrf` added
to legal-plain's metrics. Records both wall times and, from each run.json, how many answers were generated and how
many came from the generation cache.

Goal: the warm run generates no answer (every answer reused) and its scores cover the added metric.

Run: .venv/bin/python benchmarks/demo_cache.py              (the demo as `make demo` runs it, served on vLLM)
     .venv/bin/python benchmarks/demo_cache.py --in-process (generated with transformers instead)
     .venv/bin/python benchmarks/demo_cache.py --quick      (a check that it works: 4 examples a task, the two
                                                             prompted SmolLM2 candidates, in process; written to
                                                             demo_cache-quick.json)
Writes benchmarks/results/demo_cache.json (or demo_cache-quick.json); exits 1 when the goal is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from record import ROOT, write

ADDED = ("legal-plain", "chrf")  # the metric the second run adds, on the task it adds it to


def _suite(tmp: Path, quick: bool, added: bool) -> Path:
    """The demo suite with its tasks copied beside it (so one task file can gain a metric), cut down under --quick."""
    suite = yaml.safe_load((ROOT / "suites" / "demo.yaml").read_text())
    refs = []
    for ref in suite["tasks"]:
        folder = tmp / "tasks" / ref["task"]
        if not folder.exists():
            shutil.copytree(ROOT / "tasks" / ref["task"], folder)
        task = yaml.safe_load((folder / "task.yaml").read_text())
        metrics = [m for m in task["metrics"] if m != ADDED[1]]
        task["metrics"] = [*metrics, ADDED[1]] if added and ref["task"] == ADDED[0] else metrics
        (folder / "task.yaml").write_text(yaml.safe_dump(task, sort_keys=False))
        refs.append({**ref, "task": str(folder / "task.yaml"), **({"sample": 4} if quick else {})})
    suite["tasks"] = refs
    if quick:
        suite["candidates"] = [c for c in suite["candidates"] if c["name"] in ("smol-zero", "smol-fewshot")]
        suite["bootstrap"] = {**suite.get("bootstrap", {}), "resamples": 200}
    path = tmp / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def _run(suite: Path, results: Path, run_id: str, in_process: bool, env: dict[str, str]) -> dict[str, Any]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(suite), "--results", str(results),
                           "--run-id", run_id, *(["--in-process"] if in_process else [])], cwd=ROOT, env=env)
    wall = time.perf_counter() - started
    record = json.loads((results / run_id / "run.json").read_text())
    cache = record.get("cache") or {}
    counts = [c for per_task in cache.get("answers", {}).values() for c in per_task.values()]
    scored = results / run_id / "metrics.json"  # absent where the run stopped before scoring
    metrics = json.loads(scored.read_text()) if scored.is_file() else []
    return {"wall_s": round(wall, 1), "exit_code": done.returncode, "status": record["status"],
            "generated": sum(c["generated"] for c in counts), "reused": sum(c["reused"] for c in counts),
            "timings_s": record["timings_s"],
            "scored_added_metric": any((m["task"], m["metric"]) == ADDED for m in metrics)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="4 examples a task, two candidates, in process")
    parser.add_argument("--in-process", action="store_true", help="pass --in-process to harness run")
    args = parser.parse_args()
    in_process = args.in_process or args.quick
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        # Cold: nothing cached, no adapter trained (the warm run finds both where the cold one left them).
        env = {**os.environ, "HARNESS_ADAPTERS": str(tmp / "adapters")}
        results = tmp / "results"
        cold = _run(_suite(tmp, args.quick, added=False), results, "cold", in_process, env)
        warm = _run(_suite(tmp, args.quick, added=True), results, "warm", in_process, env)
    checks = {"cold run complete": cold["status"] == "complete",
              "warm run complete": warm["status"] == "complete",
              "warm run generated nothing": warm["generated"] == 0 and warm["reused"] == cold["generated"] > 0,
              f"warm run scored the added {ADDED[1]} on {ADDED[0]}": warm["scored_added_metric"]}
    for check, ok in checks.items():
        print(f"{'met' if ok else 'NOT met'}: {check}")
    write("demo_cache-quick" if args.quick else "demo_cache", goal="; ".join(checks), met=all(checks.values()),
          figures={"cold": cold, "warm": warm, "warm_over_cold_wall": round(warm["wall_s"] / cold["wall_s"], 3),
                   "checks": checks},
          settings={"suite": "suites/demo.yaml", "added_metric": list(ADDED), "quick": args.quick,
                    "in_process": in_process})


if __name__ == "__main__":
    main()
