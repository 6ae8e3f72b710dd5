"""`harness cache info|prune`: what the results folder's generation cache holds, and removing part of it."""

from __future__ import annotations

from pathlib import Path

import typer

from harness.cli_console import out
from harness.errors import HarnessError

cache_app = typer.Typer(no_args_is_help=True, help="The generation cache: answers reused across runs.")

RESULTS = typer.Option(Path("results"), "--results", help="the results folder whose cache it is")


def _counts(title: str, counts: dict[str, int]) -> None:
    out.print(f"{title}:")
    for name, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        out.print(f"  {name}: {n}", markup=False, highlight=False)


@cache_app.command("info")
def info(results: Path = RESULTS) -> None:
    """Where the cache is, its size, and its answers per model and per run that generated them."""
    from harness.generation_cache import GenerationCache
    from harness.store import ResultsDir

    path = ResultsDir(results).generations_db
    if not path.is_file():
        out.print(f"{path}: no generation cache yet (a `harness run` into {results} starts one)", markup=False)
        return
    cache = GenerationCache(path)
    try:
        found = cache.info()
    finally:
        cache.close()
    out.print(f"{found.path}: {found.answers} answers, {found.size_bytes / 1e6:.2f} MB"
              + (f", stored {found.oldest} to {found.newest}" if found.oldest else ""), markup=False)
    if found.answers:
        _counts("per model", found.by_model)
        _counts("per run", found.by_run)


@cache_app.command("prune")
def prune(
    results: Path = RESULTS,
    older_than: float = typer.Option(None, "--older-than", min=0, help="answers stored more than this many days ago"),
    run: str = typer.Option(None, "--run", help="answers a run (its id) generated"),
    model: str = typer.Option(None, "--model", help="answers of a candidate's `model:` as the suite wrote it"),
) -> None:
    """Remove the answers matching every condition given (at least one), and say what was removed."""
    from harness.generation_cache import GenerationCache
    from harness.store import ResultsDir

    if older_than is None and run is None and model is None:
        raise HarnessError("harness cache prune: give --older-than, --run or --model (every condition given must hold)")
    path = ResultsDir(results).generations_db
    if not path.is_file():
        raise HarnessError(f"{path}: no generation cache to prune")
    cache = GenerationCache(path)
    try:
        removed = cache.prune(older_than, run, model)
    finally:
        cache.close()
    out.print(f"removed {removed.answers} answers from {path}", markup=False)
    if removed.answers:
        _counts("per model", removed.by_model)
        _counts("per run", removed.by_run)
