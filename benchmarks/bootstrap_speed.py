"""Bootstrap speed: 10,000 resamples of 10,000 examples for three candidates (accuracy, and macro-F1 over
77 labels), against scipy.stats.bootstrap (vectorised, percentile method) on the same accuracy data.

Run: .venv/bin/python benchmarks/bootstrap_speed.py [--examples 10000] [--resamples 10000]
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--labels", type=int, default=77)
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

    t0 = time.perf_counter()
    acc_draws = draws(accuracy, acc_stats, n, b, seed=1)
    ours_acc = time.perf_counter() - t0
    t0 = time.perf_counter()
    f1_draws = draws(macro, f1_stats, n, b, seed=1)
    ours_f1 = time.perf_counter() - t0

    t0 = time.perf_counter()
    peer = {c: scipy_stats.bootstrap((r,), np.mean, n_resamples=b, method="percentile", vectorized=True,
                                     random_state=1).confidence_interval for c, r in right.items()}
    scipy_acc = time.perf_counter() - t0

    table = Table(title=f"Bootstrap: {b:,} resamples × {n:,} examples × {len(candidates)} candidates")
    for col in ("what", "seconds", "ratio to scipy"):
        table.add_column(col, justify="right" if col != "what" else "left")
    table.add_row("harness accuracy (shared resamples)", f"{ours_acc:.2f}", f"{ours_acc / scipy_acc:.2f}")
    table.add_row(f"harness macro-F1 ({k} labels)", f"{ours_f1:.2f}", f"{ours_f1 / scipy_acc:.2f}")
    table.add_row("scipy.stats.bootstrap accuracy", f"{scipy_acc:.2f}", "1.00")
    Console().print(table)
    for c in candidates:
        lo, hi = percentile_interval(acc_draws[c], 0.95)
        f_lo, f_hi = percentile_interval(f1_draws[c], 0.95)
        print(f"{c:9s} accuracy 95% [{lo:.4f}, {hi:.4f}] (scipy [{peer[c].low:.4f}, {peer[c].high:.4f}]), "
              f"macro-F1 95% [{f_lo:.4f}, {f_hi:.4f}]")


if __name__ == "__main__":
    main()
