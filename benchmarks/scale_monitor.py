"""How `harness monitor` grows with traffic, and whether its default rules stay quiet as windows grow.

- Growth: the real CLI (`python -m harness.cli monitor`, a subprocess) on 10k, 100k and 1M rows of Banking77's
  test messages replicated with timestamps (the issue's case: outputs and references given, windows of a day of
  10,000 rows, the default rules, against the banking77 suite), its wall time and peak memory (the subprocess's
  maximum RSS, from wait4), and the growth exponent: the slope of log(time) on log(rows), least squares.
  Goals: exponent <= 1.1; 1M rows in under 10 minutes within 4 GiB (on 2 cores).
- False alarms (`--part false-alarms`): quiet traffic, drawn from the held-out half of Banking77's training split
  against a task whose data is the other half, in windows of 1k, 10k and 100k rows through `monitor()` with the
  default rules. Goal: at most 5% of windows with an alert at every size; beside the count, the one-sided 95%
  upper bound of the rate (Clopper–Pearson) and, per signal, how near its interval's lower bound came to the
  threshold (the margin that keeps the rate flat as windows grow).

Run: PYTHONPATH=. .venv/bin/python benchmarks/scale_monitor.py [--part growth|false-alarms|both] [--quick]
Writes benchmarks/results/scale_monitor.json and scale_monitor-false-alarms.json; exits 1 when a goal is missed.
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
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy.stats import beta

from record import write

ROOT = Path(__file__).resolve().parents[1]
BANKING = ROOT / "tasks" / "banking77"
GROWTH_SIZES, QUICK_SIZES = (10_000, 100_000, 1_000_000), (300, 1_000, 3_000)
MAX_EXPONENT, MAX_SECONDS_1M, MAX_GIB = 1.1, 600, 4.0
MAX_FALSE_ALARMS = 0.05
WINDOWS_PER_SIZE = {1_000: 60, 10_000: 30, 100_000: 10}


def write_traffic(path: Path, texts: list[str], labels: list[str], rows: int, per_window: int,
                  rng: np.random.Generator | None = None) -> Path:
    """`rows` lines, `per_window` a day; the messages in turn (or drawn at random with `rng`), each answered and
    labelled with its own category."""
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    step = timedelta(days=1) / per_window
    picks = rng.integers(0, len(texts), rows) if rng is not None else np.arange(rows) % len(texts)
    with path.open("w") as handle:
        for i, k in enumerate(picks):
            when = start + timedelta(days=i // per_window) + (i % per_window) * step
            handle.write(json.dumps({"time": when.isoformat(), "inputs": {"text": texts[k]}, "output": labels[k],
                                     "reference": labels[k]}) + "\n")
    return path


def write_suite(folder: Path, task: str = "banking77") -> Path:
    suite = folder / "suite.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "scale", "tasks": [task], "candidates": [{"name": "c", "model": "smollm2-135m-instruct"}],
        "manifest": {"criteria": [{"task": Path(task).parent.name or task, "metric": "accuracy", "candidate": "c",
                                   "at_least": 0.5}], "monitor": {"window": "day"}}}))
    return suite


def run_cli(log: Path, suite: Path, results: Path) -> dict:
    """`harness monitor` in a child process: its wall time, peak RSS and the report it wrote."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "harness.cli", "monitor", str(log), "--against", str(suite),
                              "--results", str(results)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        raise SystemExit(f"harness monitor exited {code}: {child.stderr.read() if child.stderr else ''}")
    [report] = results.glob("monitors/*/monitor.json")
    record = json.loads(report.read_text())
    alerting = [w["window"] for w in record["windows"] if any(r["status"] == "alert" for r in w["readings"])]
    return {"wall_s": round(wall, 2), "peak_rss_gib": round(usage.ru_maxrss / 2**20, 3), "exit_code": code,
            "windows": len(record["windows"]), "windows_alerting": len(alerting),
            "alerts": sorted({r["signal"] for w in record["windows"] for r in w["readings"] if r["status"] == "alert"})}


def exponent(sizes: list[int], seconds: list[float]) -> float:
    """The slope of log(seconds) on log(rows), least squares."""
    return float(np.polyfit(np.log(sizes), np.log(seconds), 1)[0])


def measure(sizes: list[int], per_window: int = 10_000) -> dict:
    """`harness monitor` on each size of the issue's traffic: per size, wall time, peak memory, windows alerting;
    and the fitted growth exponent."""
    test = pd.read_csv(BANKING / "test.csv").sample(frac=1.0, random_state=0)  # the file is sorted by label
    out: dict = {"sizes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        suite = write_suite(folder)
        for rows in sizes:
            log = write_traffic(folder / f"traffic-{rows}.jsonl", test.text.tolist(), test.category.tolist(), rows,
                                min(per_window, rows))
            out["sizes"][str(rows)] = run_cli(log, suite, folder / f"results-{rows}")
            print(f"{rows} rows: {out['sizes'][str(rows)]}", flush=True)
            log.unlink()
    times = [out["sizes"][str(n)]["wall_s"] for n in sizes]
    out["exponent"] = round(exponent(list(sizes), times), 3) if len(sizes) > 1 else None
    return out


def half_task(folder: Path) -> tuple[Path, pd.DataFrame]:
    """Banking77 whose data is half of its training split, and the other half (the quiet traffic's pool)."""
    train = pd.read_csv(BANKING / "train.csv").sample(frac=1.0, random_state=0)
    task = folder / "half"
    task.mkdir()
    train.iloc[:5000].to_csv(task / "train.csv", index=False)
    train.iloc[5000:5100].to_csv(task / "test.csv", index=False)
    for shipped in ("categories.json", "products.json"):  # the label list and the product slicing beside it
        shutil.copy(BANKING / shipped, task)
    spec = yaml.safe_load((BANKING / "task.yaml").read_text()) | {"name": "half"}
    (task / "task.yaml").write_text(yaml.safe_dump(spec))
    return task / "task.yaml", train.iloc[5000:]


def false_alarms(windows_per_size: dict[int, int]) -> dict:
    """Per window size: windows, windows with an alert, the rate's upper bound, and per ruled signal the highest
    lower bound and the lowest upper bound any window reached (an at_most rule alerts when the first passes its
    threshold, an at_least rule when the second falls below its)."""
    from harness.monitor import monitor

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        task, pool = half_task(folder)
        suite = write_suite(folder, str(task.relative_to(folder)))
        for size, windows in windows_per_size.items():
            log = write_traffic(folder / f"quiet-{size}.jsonl", pool.text.tolist(), pool.category.tolist(),
                                size * windows, size, np.random.default_rng(size))
            report = monitor(log, suite, say=lambda _: None)
            log.unlink()
            days = [w for w in report.windows if w.window != "all"]
            alerted = sum(any(r.status == "alert" for r in w.readings) for w in days)
            ruled = [r for w in days for r in w.readings if r.rule]
            closest = {signal: {"rule": next(r.rule for r in ruled if r.signal == signal),
                                "highest_low": round(max(r.ci_low for r in ruled if r.signal == signal), 4),
                                "lowest_high": round(min(r.ci_high for r in ruled if r.signal == signal), 4)}
                       for signal in dict.fromkeys(r.signal for r in ruled)}
            out[str(size)] = {"windows": len(days), "with_alert": alerted, "false_alarm_rate": alerted / len(days),
                              "rate_upper_95": round(float(beta.ppf(0.95, alerted + 1, len(days) - alerted)), 4),
                              "with_insufficient": sum(any(r.status == "insufficient" for r in w.readings)
                                                       and not any(r.status == "alert" for r in w.readings)
                                                       for w in days),
                              "closest_to_threshold": closest}
            print(f"windows of {size}: {out[str(size)]}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", choices=["growth", "false-alarms", "both"], default="both")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script, measures nothing")
    args = parser.parse_args()
    name = "scale_monitor-quick" if args.quick else "scale_monitor"
    if args.part in ("growth", "both"):
        sizes = list(QUICK_SIZES if args.quick else GROWTH_SIZES)
        growth = measure(sizes, per_window=1_000 if args.quick else 10_000)
        largest = growth["sizes"][str(sizes[-1])]
        met = growth["exponent"] <= MAX_EXPONENT and (args.quick or (
            largest["wall_s"] <= MAX_SECONDS_1M and largest["peak_rss_gib"] <= MAX_GIB))
        write(name, goal=f"growth exponent <= {MAX_EXPONENT}; 1M rows in under {MAX_SECONDS_1M} s within "
                         f"{MAX_GIB} GiB", met=met, figures=growth,
              settings={"traffic": "tasks/banking77 test split replicated, outputs and references given",
                        "window": "day", "rows_per_window": 1_000 if args.quick else 10_000,
                        "rules": "the defaults", "against": "a suite of banking77 (reference: its train split)",
                        "command": "python -m harness.cli monitor LOG --against SUITE --results DIR"})
    if args.part in ("false-alarms", "both"):
        windows = {100: 10, 1_000: 5} if args.quick else WINDOWS_PER_SIZE
        figures = false_alarms(windows)
        write(f"{name}-false-alarms", goal=f"at most {MAX_FALSE_ALARMS:.0%} of quiet windows with an alert at "
                                           "every window size", met=all(f["false_alarm_rate"] <= MAX_FALSE_ALARMS
                                                                        for f in figures.values()),
              figures=figures, settings={"reference": "half of tasks/banking77's train split (5,000 messages)",
                                         "quiet_traffic": "drawn at random from the other half (5,003 messages), "
                                                          "answered and labelled with their own categories",
                                         "windows_per_size": windows, "rules": "the defaults"})


if __name__ == "__main__":
    main()
