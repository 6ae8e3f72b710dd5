"""Bootstrap speed: 10,000 resamples of 10,000 examples for three candidates (accuracy, and macro-F1 over
77 labels), against scipy.stats.bootstrap (vectorised, percentile method) on the same accuracy data.

Run: .venv/bin/python benchmarks/bootstrap_speed.py [--examples 10000] [--resamples 10000] [--repeats 3]
Writes benchmarks/results/bootstrap_speed.json; exits 1 when the goal is missed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from rich.console import Console
from rich.table import Table
from scipy import stats as scipy_stats

from harness.metrics import get_metric
from harness.stats import draws, percentile_interval

from record import alternate, spread, write

MAX_RATIO, MAX_GAP = 0.5, 0.005


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--labels", type=int, default=77)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n, b = args.examples, args.resamples
    rng = np.random.default_rng(0)
    candidates = ("base", "fewshot", "finetune")
    right = {c: (rng.random(n) < p).astype(float) for c, p in zip(candidates, (0.6, 0.7, 0.85), strict=True)}
    accuracy = get_metric("accuracy")
    acc_stats = {c: np.stack([r, np.ones(n)], axis=1) for c, r in right.items()}

    # Macro-F1 statistics: one-hot tp / fp / fn over the label set, as the metric builds them.
    k = args.labels
    truth = rng.integers(0, k, n)
    f1_stats = {}
    for c, r in right.items():
        pred = np.where(r == 1, truth, (truth + 1 + rng.integers(0, k - 1, n)) % k)
        s = np.zeros((n, 3 * k))
        s[np.arange(n), np.where(pred == truth, truth, 2 * k + truth)] = 1
        wrong = pred != truth
        s[np.arange(n)[wrong], k + pred[wrong]] = 1
        f1_stats[c] = s
    macro = get_metric("macro_f1")

    def timed(compute):
        def side(_repeat: int) -> tuple[float, object]:
            started = time.perf_counter()
            result = compute()
            return time.perf_counter() - started, result
        return side

    runs, order = alternate({
        "harness accuracy": timed(lambda: draws(accuracy, acc_stats, n, b, seed=1)),
        "harness macro-F1": timed(lambda: draws(macro, f1_stats, n, b, seed=1)),
        "scipy accuracy": timed(lambda: {c: scipy_stats.bootstrap(
            (r,), np.mean, n_resamples=b, method="percentile", vectorized=True, random_state=1).confidence_interval
            for c, r in right.items()}),
    }, args.repeats)
    seconds = {side: [t for t, _ in results] for side, results in runs.items()}
    ratios = [a / s for a, s in zip(seconds["harness accuracy"], seconds["scipy accuracy"], strict=True)]
    acc_draws, peer = runs["harness accuracy"][0][1], runs["scipy accuracy"][0][1]
    f1_draws = runs["harness macro-F1"][0][1]

    table = Table(title=f"Bootstrap: {b:,} resamples × {n:,} examples × {len(candidates)} candidates, "
                        f"{args.repeats} repeats in alternating order (median, min–max)")
    for col in ("what", "seconds", "ratio to scipy"):
        table.add_column(col, justify="right" if col != "what" else "left")
    scipy_median = spread(seconds["scipy accuracy"])["median"]
    for side, values in seconds.items():
        s = spread(values)
        table.add_row(side, f"{s['median']:.2f} ({s['min']:.2f}–{s['max']:.2f})", f"{s['median'] / scipy_median:.2f}")
    Console().print(table)
    intervals, largest_gap = {}, 0.0
    for c in candidates:
        lo, hi = percentile_interval(acc_draws[c], 0.95)
        f_lo, f_hi = percentile_interval(f1_draws[c], 0.95)
        largest_gap = max(largest_gap, abs(lo - peer[c].low), abs(hi - peer[c].high))
        intervals[c] = {"harness_accuracy": [lo, hi], "scipy_accuracy": [peer[c].low, peer[c].high],
                        "harness_macro_f1": [f_lo, f_hi]}
        print(f"{c:9s} accuracy 95% [{lo:.4f}, {hi:.4f}] (scipy [{peer[c].low:.4f}, {peer[c].high:.4f}]), "
              f"macro-F1 95% [{f_lo:.4f}, {f_hi:.4f}]")
    ratio = spread(ratios)
    write("bootstrap_speed", goal=f"harness accuracy at most {MAX_RATIO} of scipy's time (median of repeats), "
                                  f"intervals within {MAX_GAP} of scipy's",
          met=ratio["median"] <= MAX_RATIO and largest_gap <= MAX_GAP,
          figures={"seconds": {side: spread(v) for side, v in seconds.items()},
                   "ratio_harness_accuracy_to_scipy": ratio, "largest_interval_gap": largest_gap,
                   "intervals": intervals},
          settings={"examples": n, "resamples": b, "labels": k, "candidates": list(candidates)}, order=order)


if __name__ == "__main__":
    main()
