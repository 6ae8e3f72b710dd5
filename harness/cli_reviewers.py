"""`harness reviewers`: the accounts the dashboard's Review page takes ratings from (kept in the ratings
database beside the results). Bad input is a HarnessError, one line and exit 2 through `harness.cli.main`."""

from __future__ import annotations

from pathlib import Path

import typer

from harness.errors import HarnessError

reviewers_app = typer.Typer(no_args_is_help=True, help="Reviewer accounts for the dashboard's Review page.")
RESULTS = typer.Option(Path("results"), "--results", help="the results folder (its ratings.sqlite)")


@reviewers_app.command("add")
def add(
    name: str = typer.Argument(..., help="the reviewer's name, as their ratings will carry it"),
    role: str = typer.Option("reviewer", "--role", help="reviewer (their own queue) or admin (everyone's progress)"),
    results: Path = RESULTS,
    host: str = typer.Option("localhost", "--host", help="the dashboard's address, as reviewers reach it"),
    port: int = typer.Option(8501, "--port", help="the dashboard's port"),
) -> None:
    """Create a reviewer and print their personal sign-in link (shown once: only its hash is kept)."""
    from harness.ratings import ROLES, RatingStore

    if role not in ROLES:
        raise HarnessError(f"--role: expected one of {', '.join(ROLES)}, not {role!r}")
    token = RatingStore.beside(results).add_reviewer(name, role)
    print(f"http://{host}:{port}/?page=Review&token={token}")


@reviewers_app.command("link")
def link(
    name: str = typer.Argument(..., help="an existing reviewer"),
    results: Path = RESULTS,
    host: str = typer.Option("localhost", "--host", help="the dashboard's address, as reviewers reach it"),
    port: int = typer.Option(8501, "--port", help="the dashboard's port"),
) -> None:
    """Print a new sign-in link for a reviewer who lost theirs; the old link stops working."""
    from harness.ratings import RatingStore

    token = RatingStore.beside(results).new_link(name)
    print(f"http://{host}:{port}/?page=Review&token={token}")


@reviewers_app.command("list")
def list_reviewers(results: Path = RESULTS) -> None:
    """Every reviewer: name, role and how many ratings they have saved."""
    from harness.ratings import accounts

    for reviewer in accounts(results):
        print(f"{reviewer.name}\t{reviewer.role}\t{reviewer.ratings}")


@reviewers_app.command("plan")
def plan(
    run_dir: Path = typer.Argument(..., help="a finished run directory"),
    plan_file: Path = typer.Argument(..., help="the review plan (YAML: mode, overlap, tasks, candidates, items, gold)"),
    replace: bool = typer.Option(False, "--replace", help="replace the run's plan (ratings saved so far stay)"),
) -> None:
    """Put a review plan on a run: reviewers' queues on the Review page are drawn from it."""
    from harness.ratings import accounts
    from harness.reviewing import plan_review

    progress = plan_review(run_dir, plan_file, replace)
    needed = progress.planned * progress.plan.overlap
    gold = len(progress.items) - progress.planned
    print(f"{progress.planned} items × overlap {progress.plan.overlap} = {needed} ratings, plus {gold} gold items "
          f"for every reviewer ({progress.plan.mode} mode); {progress.complete} items complete already")
    reviewers = accounts(run_dir.parent)
    if len(reviewers) < progress.plan.overlap:
        print(f"{len(reviewers)} reviewer accounts: an item needs {progress.plan.overlap} reviewers "
              "(`harness reviewers add NAME`)")


@reviewers_app.command("progress")
def progress(run_dir: Path = typer.Argument(..., help="a run directory with a review plan")) -> None:
    """Where a run's review plan stands: items complete, each reviewer's ratings and gold record."""
    from harness.reviewing import review_progress

    found = review_progress(run_dir)
    print(f"{found.complete} of {found.planned} items complete (overlap {found.plan.overlap})")
    gold = {g.reviewer: g for g in found.gold}
    for name in sorted(set(found.by_reviewer) | set(gold)):
        record = gold.get(name)
        flag = "" if record is None else f"\tgold: {record.why}" + ("\tFLAGGED" if record.flagged else "")
        print(f"{name}\t{found.by_reviewer.get(name, 0)} rated{flag}")
