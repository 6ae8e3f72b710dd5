"""Growth: how the harness's own cost grows with the work (issue 27, item 3).

- scoring: `harness gate` (intervals, paired tests, verdicts, report.md) on a synthetic run of two tasks (a
  classification task with 77 labels scored by accuracy and macro-F1, a text task scored by token F1) and four
  candidates, at 1k, 10k and 100k examples; each size gated in a process of its own, whose peak memory is its own.
- dashboard: the Scorecard and Examples pages of a scored run with five candidates in headless Chromium, each on
  a fresh `harness dashboard` server: seconds from opening the page to its main table being visible (cold: the
  server's first visit; warm: the page opened again), and the server's peak memory.
- monitor: `harness monitor` on traffic logs, through `benchmarks/scale_monitor.py`'s `measure(sizes)` (skipped,
  with a message, where that file is absent).

Each part's table gives size, wall time and peak memory, with growth exponents fitted by least squares on
log(size) against log(time) and log(memory): for scoring the memory the stage added over its process's own before it
(lazily imported libraries included), for the dashboard the server's peak. Goals: exponents at most 1.1, pages
under 5 s.

    .venv/bin/python benchmarks/scale.py                      # every part at full size (about 15 min here)
    .venv/bin/python benchmarks/scale.py --parts scoring      # one part
    .venv/bin/python benchmarks/scale.py --quick              # tiny sizes: checks the machinery, not the goals

Writes benchmarks/results/scale.json (--quick: scale-quick.json, not kept); exits 1 when a goal is missed. Timings
on a machine shared with other work are inflated: compare exponents there, quote figures from a quiet one.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from record import ROOT, write

sys.path.insert(0, str(ROOT))

SIZES = {"scoring": [1_000, 10_000, 100_000], "dashboard": [1_000, 10_000], "monitor": [10_000, 100_000, 1_000_000]}
QUICK_SIZES = {"scoring": [100, 200, 400], "dashboard": [100, 200], "monitor": [500, 1_000, 2_000]}
SCORING_CANDIDATES = ("base", "fewshot", "ft", "big")
DASHBOARD_CANDIDATES = (*SCORING_CANDIDATES, "distilled")
ACCURACY = {"base": 0.55, "fewshot": 0.7, "ft": 0.85, "big": 0.88, "distilled": 0.8}
N_LABELS = 77
FAILED_SHARE, INVALID_SHARE = 0.005, 0.01  # failed requests and answers naming no label
RESAMPLES, CONFIDENCE = 1000, 0.95
MAX_EXPONENT, MAX_PAGE_S = 1.1, 5.0
WORDS = [f"w{i}" for i in range(400)]
PAGES = ("Scorecard", "Examples")


def exponent(sizes: list[int], values: list[float]) -> float | None:
    """The slope of log(value) on log(size) by least squares: 1 is linear growth."""
    kept = [(s, v) for s, v in zip(sizes, values, strict=True) if v > 0]
    if len(kept) < 2:
        return None
    x, y = np.log([s for s, _ in kept]), np.log([v for _, v in kept])
    return float(np.polyfit(x, y, 1)[0])


def _write_tasks(folder: Path, n: int, rng: np.random.Generator) -> tuple[list[str], list[str], list[str]]:
    """The two tasks' files and data; returns the labels, each example's true label and each reference text."""
    labels = [f"intent_{i:02d}" for i in range(N_LABELS)]
    truth = [labels[i] for i in rng.integers(0, N_LABELS, n)]
    references = [" ".join(rng.choice(WORDS, 12)) for _ in range(n)]
    (folder / "intent").mkdir(parents=True)
    (folder / "intent" / "labels.json").write_text(json.dumps(labels))
    (folder / "intent" / "test.jsonl").write_text(
        "".join(json.dumps({"id": f"e{i}", "text": f"message {i}", "label": t}) + "\n" for i, t in enumerate(truth)))
    (folder / "intent" / "task.yaml").write_text(json.dumps({
        "name": "intent", "kind": "classification", "labels": "labels.json", "prompt": {"template": "{text}"},
        "data": {"test": "test.jsonl", "id": "id", "inputs": {"text": "text"}, "reference": "label"},
        "metrics": ["accuracy", "macro_f1"]}))
    (folder / "summary").mkdir()
    (folder / "summary" / "test.jsonl").write_text("".join(
        json.dumps({"id": f"e{i}", "doc": f"document {i}: {r}", "summary": r}) + "\n"
        for i, r in enumerate(references)))
    (folder / "summary" / "task.yaml").write_text(json.dumps({
        "name": "summary", "kind": "generation", "prompt": {"template": "Summarise: {doc}"},
        "data": {"test": "test.jsonl", "id": "id", "inputs": {"doc": "doc"}, "reference": "summary"},
        "metrics": ["token_f1"]}))
    return labels, truth, references


def _write_suite(folder: Path, url: str, candidates: tuple[str, ...]) -> Path:
    served = {"backend": "openai", "url": url}
    suite = {"name": "scale", "seed": 0, "tasks": ["intent/task.yaml", "summary/task.yaml"],
             "candidates": [{"name": c, "model": c, **served} for c in candidates],
             "bootstrap": {"resamples": RESAMPLES, "confidence": CONFIDENCE},
             "manifest": {"confidence": CONFIDENCE, "criteria": [
                 {"task": "intent", "metric": "accuracy", "candidate": "ft", "at_least": 0.8},
                 {"task": "intent", "metric": "macro_f1", "candidate": "ft", "better_than": "base", "by": 0.1},
                 {"task": "summary", "metric": "token_f1", "candidate": "ft", "not_worse_than": "big", "margin": 0.05},
                 {"task": "intent", "metric": "e2e_ms_p95", "candidate": "ft", "at_most": 2000}]}}
    path = folder / "suite.yaml"
    path.write_text(json.dumps(suite))
    return path


def _answers(rng: np.random.Generator, latent: np.ndarray, p: float, labels: list[str], truth: list[str],
             references: list[str]) -> tuple[list[str], list[str]]:
    """One candidate's answers on both tasks: right with probability p, sharing half its draws with the other
    candidates (they find the same examples hard); some answers name no label; summaries lose words as p falls."""
    n = len(truth)
    right = np.where(rng.random(n) < 0.5, latent, rng.random(n)) < p
    other = rng.integers(1, N_LABELS, n)
    invalid = rng.random(n) < INVALID_SHARE
    intent = ["I am not sure" if bad else t if ok else labels[(labels.index(t) + k) % N_LABELS]
              for t, ok, k, bad in zip(truth, right, other, invalid, strict=True)]
    keep = rng.random((n, 12)) < p
    summary = [" ".join(w if k else "x" for w, k in zip(r.split(), row, strict=True))
               for r, row in zip(references, keep, strict=True)]
    return intent, summary


def _completions(cand: str, task: str, texts: list[str], rng: np.random.Generator) -> list[Any]:
    from harness.records import Completion

    n = len(texts)
    e2e = 0.3 * np.exp(0.5 * rng.standard_normal(n))
    failed = rng.random(n) < FAILED_SHARE
    return [Completion(f"e{i}", cand, task, "", error="HTTP 503: injected") if failed[i] else
            Completion(f"e{i}", cand, task, t, prompt_tokens=40, completion_tokens=8, ttft_s=float(e) * 0.3,
                       itl_s=[round(float(e) * 0.1, 5)] * 7, e2e_s=float(e))
            for i, (t, e) in enumerate(zip(texts, e2e, strict=True))]


def build_run(folder: Path, n: int, candidates: tuple[str, ...]) -> Path:
    """A run directory as `harness run` leaves it before scoring: run.json, the suite, tasks and data it names,
    and every candidate's predictions. Returns the run directory."""
    from harness.pipeline import Pipeline
    from harness.plan import make_plan
    from harness.store import RunDir
    from tests.fake_openai_server import FakeServer

    rng = np.random.default_rng(n)
    labels, truth, references = _write_tasks(folder, n, rng)
    with FakeServer() as server:  # the candidates' url must answer while the suite is checked; never asked
        run_plan = make_plan(_write_suite(folder, server.url, candidates))
    run = RunDir(folder / "results" / "scale")
    run.path.mkdir(parents=True)
    latent = rng.random(n)
    for cand in candidates:
        intent, summary = _answers(rng, latent, ACCURACY[cand], labels, truth, references)
        for task, texts in (("intent", intent), ("summary", summary)):
            path = run.predictions_file(cand, task)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(c.to_json() + "\n" for c in _completions(cand, task, texts, rng)))
    record = Pipeline(run_plan, run.path.parent)._record(run, "complete", time.strftime("%FT%T"), {})
    run.write_run(record)
    return run.path


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def child(stage: str, run_dir: Path) -> None:
    """In a process of its own: `gate` times `harness gate` on the run; `score` scores it as `harness run` does
    after generating (scores.jsonl and latency.json too, which the dashboard reads). Prints seconds and memory."""
    from harness.evaluation import score_run, write_scored
    from harness.pipeline import regate
    from harness.plan import plan_from_run
    from harness.report import markdown

    before = _rss_mib()
    started, cpu_started = time.perf_counter(), time.process_time()
    if stage == "gate":
        regate(run_dir)
    else:
        run_plan, run = plan_from_run(run_dir)
        scored = score_run(run_plan, run, say=lambda _: None)
        write_scored(run_plan, run, scored)
        run.write_report(markdown(run.read_run(), {}, scored.results, scored.verdicts,
                                  known={t.name: t.metrics for t in run_plan.tasks}, corrections=scored.corrections))
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_mib": peak, "rss_before_mib": before}))


def _in_child(stage: str, run_dir: Path) -> dict[str, float]:
    done = subprocess.run([sys.executable, __file__, "--child", stage, str(run_dir)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        raise SystemExit(f"{stage} on {run_dir} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def scoring(sizes: list[int]) -> dict[str, Any]:
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            print(f"scoring: building a run of {n:,} examples × {len(SCORING_CANDIDATES)} candidates")
            run_dir = build_run(Path(tmp), n, SCORING_CANDIDATES)
            got = _in_child("gate", run_dir)
        row = {"examples": n, "seconds": got["seconds"], "cpu_seconds": got["cpu_seconds"], "peak_mib": got["peak_mib"],
               "added_mib": got["peak_mib"] - got["rss_before_mib"]}
        print(f"  {n:>9,} examples: {row['seconds']:.2f} s ({row['cpu_seconds']:.2f} s of CPU), "
              f"peak {row['peak_mib']:.0f} MiB")
        rows.append(row)
    return _table(rows, "examples", f"harness gate: 2 tasks × {len(SCORING_CANDIDATES)} candidates, "
                                    f"{RESAMPLES} resamples, 4 criteria")


def _table(rows: list[dict[str, Any]], size: str, what: str, time_key: str = "seconds",
           memory_key: str = "added_mib") -> dict[str, Any]:
    sizes = [r[size] for r in rows]
    return {"what": what, "size": size, "rows": rows, "measured": time.strftime("%FT%T%z"),
            "exponents": {"time": exponent(sizes, [r[time_key] for r in rows]),
                          "memory": exponent(sizes, [r[memory_key] for r in rows])}}


# The page's main table: the Scorecard's metrics (after the manifest's verdicts), the Examples page's first
# candidate's scores of the example shown.
MAIN_TABLE = {"Scorecard": 1, "Examples": 0}
SETTLED = ("() => !document.querySelector('[data-testid=\"stStatusWidgetRunningIcon\"]') "
           "&& !document.querySelector('[data-stale=\"true\"]')")
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _open_page(browser: Any, url: str, page_name: str) -> tuple[float, float]:
    """Seconds until the page's main table is visible, and until the page's script has finished."""
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    started = time.perf_counter()
    page.goto(url, wait_until="commit")
    page.locator("[data-testid='stDataFrame']").nth(MAIN_TABLE[page_name]).wait_for(state="visible", timeout=300_000)
    shown = time.perf_counter() - started
    page.wait_for_timeout(300)
    page.wait_for_function(SETTLED, timeout=300_000)
    settled = time.perf_counter() - started
    page.close()
    return shown, settled


def _page_times(results: Path, page_name: str) -> dict[str, float]:
    """One page on a fresh `harness dashboard`: opened once (cold: the server's first visit), then again."""
    import shutil

    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("the dashboard part needs chromium (apt-get install chromium) and playwright")
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "harness.cli", "dashboard", "--results", str(results),
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.time() + 120
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            if time.time() > deadline or server.poll() is not None:
                raise SystemExit("the dashboard did not start")
            time.sleep(0.2)
        url = f"http://127.0.0.1:{port}/?page={page_name}"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=BROWSER_FLAGS)
            cold, cold_settled = _open_page(browser, url, page_name)
            warm, warm_settled = _open_page(browser, url, page_name)
            browser.close()
        return {"cold_s": cold, "cold_settled_s": cold_settled, "warm_s": warm, "warm_settled_s": warm_settled,
                "server_peak_mib": _peak_mib(server.pid)}
    finally:
        server.terminate()
        server.wait(timeout=30)


def dashboard(sizes: list[int]) -> dict[str, Any]:
    rows: dict[str, list[dict[str, Any]]] = {page: [] for page in PAGES}
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            print(f"dashboard: building and scoring a run of {n:,} examples × {len(DASHBOARD_CANDIDATES)} candidates")
            run_dir = build_run(Path(tmp), n, DASHBOARD_CANDIDATES)
            _in_child("score", run_dir)
            for page in PAGES:
                row = {"examples": n, **_page_times(run_dir.parent, page)}
                print(f"  {page} at {n:>7,} examples: table after {row['cold_s']:.2f} s cold, "
                      f"{row['warm_s']:.2f} s warm; server peak {row['server_peak_mib']:.0f} MiB")
                rows[page].append(row)
    what = f"{{}} page: 2 tasks × {len(DASHBOARD_CANDIDATES)} candidates, headless Chromium"
    return {page: _table(r, "examples", what.format(page), "cold_s", "server_peak_mib") for page, r in rows.items()}


def monitor(sizes: list[int]) -> dict[str, Any]:
    if not (Path(__file__).parent / "scale_monitor.py").is_file():
        print("monitor: skipped, benchmarks/scale_monitor.py is not there yet")
        return {"skipped": "benchmarks/scale_monitor.py is not there yet"}
    measured: dict[str, Any] = importlib.import_module("scale_monitor").measure(sizes)
    return measured


def goals(figures: dict[str, Any]) -> tuple[str, bool]:
    """The goals of the parts measured, and whether all hold."""
    met = True
    if "scoring" in figures:
        met &= all(e is not None and e <= MAX_EXPONENT for e in figures["scoring"]["exponents"].values())
    if "dashboard" in figures:
        met &= all(r["cold_s"] < MAX_PAGE_S for t in figures["dashboard"].values() for r in t["rows"])
    if "monitor" in figures and "skipped" not in figures["monitor"]:
        met &= bool(figures["monitor"].get("goal_met", True))
    return (f"scoring grows at most as size^{MAX_EXPONENT} in time and memory; each dashboard page shows its main "
            f"table in under {MAX_PAGE_S:.0f} s; the monitor part's own goals"), met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the machinery, not the goals")
    parser.add_argument("--child", nargs=2, metavar=("STAGE", "RUN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return
    sizes = QUICK_SIZES if args.quick else SIZES
    parts = {"scoring": scoring, "dashboard": dashboard, "monitor": monitor}
    figures = {part: parts[part](sizes[part]) for part in args.parts}
    goal, met = goals(figures)
    write("scale-quick" if args.quick else "scale", goal=goal, met=met, figures=figures,
          settings={"parts": args.parts, "sizes": {p: sizes[p] for p in args.parts}, "quick": args.quick,
                    "labels": N_LABELS, "resamples": RESAMPLES, "confidence": CONFIDENCE,
                    "failed_share": FAILED_SHARE, "invalid_share": INVALID_SHARE,
                    "scoring_candidates": SCORING_CANDIDATES, "dashboard_candidates": DASHBOARD_CANDIDATES})


if __name__ == "__main__":
    main()
