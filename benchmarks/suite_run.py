"""A whole suite run kept as evidence: runs `harness run SUITE` as a user does, times it, and copies what the
README quotes from it (run.json with per-stage timings and dtypes, metrics.json, comparisons.json,
report.md, each fine-tune's lineage.json) into benchmarks/results/runs/<name>/, beside a record of the
machine and the goal.

Goals: the run completes with no failed request, within --max-minutes if given, and for each --beats
CANDIDATE:TASK:METRIC that candidate's interval lies wholly above every other candidate's on that metric.

Run: .venv/bin/python benchmarks/suite_run.py suites/demo.yaml --name demo --beats smol-ft:banking77:macro_f1
(--in-process: the same suite generated with transformers instead of its vLLM servers)
Writes benchmarks/results/runs/<name>/ and benchmarks/results/suite_run-<name>.json; exits 1 when a goal is
missed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from record import RESULTS, ROOT, write

KEPT = ("run.json", "metrics.json", "comparisons.json", "report.md", "verdict.json")


def apart(metrics: list[dict], candidate: str, task: str, metric: str) -> tuple[bool, dict]:
    """Whether `candidate`'s interval lies above every other candidate's on task/metric, and the intervals."""
    rows = {m["candidate"]: m for m in metrics if m["task"] == task and m["metric"] == metric}
    if candidate not in rows:
        raise SystemExit(f"--beats: no {metric} for {candidate} on {task} in this run")
    mine = rows[candidate]
    others = {c: m for c, m in rows.items() if c != candidate}
    ok = all(mine["ci_low"] is not None and m["ci_high"] is not None and mine["ci_low"] > m["ci_high"]
             for m in others.values())
    return ok, {c: [m["value"], m["ci_low"], m["ci_high"]] for c, m in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("suite")
    parser.add_argument("--name", required=True)
    parser.add_argument("--beats", action="append", default=[], help="CANDIDATE:TASK:METRIC")
    parser.add_argument("--max-minutes", type=float, default=None)
    parser.add_argument("--in-process", action="store_true", help="pass --in-process to harness run")
    parser.add_argument("--manifest", default=None, help="also gate the run against this manifest (verdict.json)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results"
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "harness.cli", "run", args.suite, "--results", str(results),
                               "--run-id", args.name, *(["--in-process"] if args.in_process else [])], cwd=ROOT)
        wall = time.perf_counter() - started
        run_dir = results / args.name
        if args.manifest:  # after the clock: gating is not part of the run's time
            subprocess.run([sys.executable, "-m", "harness.cli", "gate", str(run_dir), "--manifest", args.manifest],
                           cwd=ROOT)
        kept = RESULTS / "runs" / args.name
        if kept.exists():
            shutil.rmtree(kept)
        kept.mkdir(parents=True)
        for name in KEPT:
            if (run_dir / name).is_file():
                shutil.copyfile(run_dir / name, kept / name)
        run = json.loads((kept / "run.json").read_text())
        # each fine-tune's lineage (from the adapter store): training steps, wall time, tokens/s, loss curves
        for adapter in map(Path, run.get("adapters", {}).values()):
            if (adapter / "lineage.json").is_file():
                shutil.copyfile(adapter / "lineage.json", kept / f"lineage-{adapter.name}.json")
    metrics = json.loads((kept / "metrics.json").read_text()) if (kept / "metrics.json").is_file() else []
    checks = {"completed": done.returncode in (0, 1) and run.get("status") == "complete"}
    if args.max_minutes is not None:
        checks[f"within {args.max_minutes:g} minutes"] = wall <= args.max_minutes * 60
    intervals = {}
    for beats in args.beats:
        candidate, task, metric = beats.split(":")
        checks[f"{candidate} apart above the others on {task} {metric}"], intervals[beats] = apart(
            metrics, candidate, task, metric)
    for check, ok in checks.items():
        print(f"{'met' if ok else 'NOT met'}: {check}")
    write(f"suite_run-{args.name}", goal="; ".join(checks), met=all(checks.values()),
          figures={"wall_s": round(wall, 1), "timings_s": run.get("timings_s"), "checks": checks,
                   "intervals": intervals, "failed_requests": run.get("failed_requests")},
          settings={"suite": args.suite, "in_process": args.in_process, "exit_code": done.returncode,
                    "kept": [str((kept / n).relative_to(ROOT)) for n in KEPT if (kept / n).is_file()]})


if __name__ == "__main__":
    main()
