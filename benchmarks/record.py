"""What every benchmark here shares: the machine's facts, sides run in alternating order, the spread of
repeats, and one JSON file per benchmark in benchmarks/results/ (the file the README quotes).

A benchmark's process exits 1 when its goal is missed, so a figure that no longer holds cannot go unseen.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from statistics import median
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
# The tests write elsewhere; the committed figures stay as measured.
RESULTS = Path(os.environ.get("HARNESS_BENCH_RESULTS", ROOT / "benchmarks" / "results"))
T = TypeVar("T")


def _cpu() -> dict[str, Any]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    return {"model": model, "cores": os.cpu_count(),
            "flags": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})}


def machine() -> dict[str, Any]:
    """Where the figures were measured: CPU (and the flags that decide dtypes), GPU, library versions and
    the commit of this checkout, as a run's run.json records them."""
    import torch

    from harness.models import native_dtype
    from harness.pipeline import git_revision, package_versions

    try:
        changes = subprocess.run(["git", "status", "--porcelain", "--", "harness"], cwd=ROOT, capture_output=True,
                                 text=True)
        uncommitted = bool(changes.stdout.strip()) if changes.returncode == 0 else None
    except OSError:
        uncommitted = None
    return {
        "cpu": _cpu(), "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "native_dtype": native_dtype(), "torch_threads": torch.get_num_threads(),
        "versions": package_versions(), "platform": platform.platform(),
        "commit": git_revision(), "uncommitted_changes": uncommitted,
    }


def alternate(sides: dict[str, Callable[[int], T]], repeats: int,
              say: Callable[[str], None] = print) -> tuple[dict[str, list[T]], list[str]]:
    """Each side once per repeat, the order reversed every other repeat (A B, B A, A B, ...), so that no
    side always runs first into cold caches or last into a warm machine. Returns each side's results in
    repeat order, and the order they ran in."""
    if repeats < 3:
        raise SystemExit("at least 3 repeats: a spread of two is no spread")
    names = list(sides)
    results: dict[str, list[T]] = {name: [] for name in names}
    order = []
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            say(f"repeat {repeat + 1}/{repeats}: {name}")
            results[name].append(sides[name](repeat))
            order.append(name)
    return results, order


def spread(values: list[float]) -> dict[str, Any]:
    """Median, range and every repeat's value."""
    return {"median": median(values), "min": min(values), "max": max(values), "repeats": values}


def write(name: str, *, goal: str, met: bool, figures: dict[str, Any], settings: dict[str, Any],
          order: list[str] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """benchmarks/results/<name>.json; exits 1 (after writing) when the goal is missed."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    record = {"benchmark": name, "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "goal": goal, "goal_met": bool(met), "figures": figures, "settings": settings, "run_order": order,
              "machine": machine(), **(extra or {})}
    # numpy scalars as plain numbers
    out.write_text(json.dumps(record, indent=2, default=lambda o: o.item()) + "\n")
    print(f"written to {out}; goal ({goal}): {'met' if met else 'NOT met'}")
    if not bool(met):
        raise SystemExit(1)
    return out
