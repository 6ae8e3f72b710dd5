"""`harness plan SUITE`: what the suite will start where, the memory each server and fine-tune needs per GPU, and
an estimate of time and cost, with no GPU and no weights; a layout that cannot run is one line and exit 2 through
`harness.cli.main`, as any bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console


def plan(
    suite: Path = typer.Argument(..., help="suite YAML file"),
    gpu: str = typer.Option("h100", "--gpu", help="the GPU planned for: h100, h200, a100-80gb, a100-40gb, l40s, l4"),
    gpu_memory: float = typer.Option(None, "--gpu-memory", help="its memory in GiB, if not the table's"),
    as_json: bool = typer.Option(False, "--json", help="print the plan as JSON (bytes, seconds) instead of tables"),
) -> None:
    """The suite's servers, GPUs, memory per GPU, fine-tune memory, requests, time and cost, before any work."""
    from harness import capacity
    from harness.workload import capacity_plan

    the_plan = capacity_plan(suite, capacity.gpu_named(gpu, gpu_memory))
    if as_json:
        print(json.dumps(capacity.to_dict(the_plan), indent=2))
        return
    out = Console(width=None if sys.stdout.isatty() else 160)
    for table in capacity.tables(the_plan):
        out.print(table)
    for note in the_plan.notes:
        Console(stderr=True).print(f"[yellow]note[/] {suite}: {note}", soft_wrap=True, highlight=False)
