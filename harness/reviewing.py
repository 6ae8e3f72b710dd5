"""A review plan put on a finished run (`harness reviewers plan|progress`): the run's outputs as they are
now, the plan's items drawn from them and registered in the ratings database beside the results."""

from __future__ import annotations

from pathlib import Path

from harness.assignments import Assignments, PlanProgress
from harness.errors import HarnessError
from harness.plan import tasks_of_run
from harness.ratings import Output, RatingStore, answer_sha256
from harness.records import Completion
from harness.review_plan import draw_items, load_review_plan
from harness.store import RunDir


def _completions_of_run(run: RunDir) -> dict[Output, Completion]:
    """The answer of every output of a finished run, as the gate scores it (the run's tasks and data must be as it
    recorded them)."""
    _, suite, tasks = tasks_of_run(run)
    return {Output(task.name, example_id, cand.name): completion
            for task in tasks for cand in suite.candidates if cand.runs(task.name)
            for example_id, completion in run.answers(cand.name, task.name).items()}


def answers_of_run(run: RunDir) -> dict[Output, str]:
    """The text of every output of a finished run, as the gate scores and reviewers rate it."""
    return {output: completion.text for output, completion in _completions_of_run(run).items()}


def rateable_outputs(run: RunDir) -> dict[Output, str]:
    """The outputs a review plan may draw: its answers less the failed requests (nothing to rate, and any failure
    makes a rating criterion insufficient)."""
    return {output: c.text for output, c in _completions_of_run(run).items() if c.ok}


def plan_review(run_dir: Path, plan_file: Path, replace: bool = False) -> PlanProgress:
    """Draws the plan's items from the run's outputs and registers them; returns the plan's progress (ratings
    already saved for those answers count)."""
    plan = load_review_plan(plan_file)
    run = RunDir(run_dir)
    if run.exists() and run.read_run().status in ("running", "interrupted"):
        raise HarnessError(f"{run_dir}: the run is {run.read_run().status}; finish it (`harness run --resume`) "
                           "before planning its review")
    items = draw_items(plan, plan_file, rateable_outputs(run))
    Assignments(RatingStore.beside(run_dir.parent)).create(run.run_id, plan, items, replace)
    return review_progress(run_dir)


def review_progress(run_dir: Path) -> PlanProgress:
    run = RunDir(run_dir)
    digests = {k: answer_sha256(v) for k, v in answers_of_run(run).items()}
    progress = Assignments(RatingStore.beside(run_dir.parent)).progress(run.run_id, digests)
    if progress is None:
        raise HarnessError(f"run {run.run_id} has no review plan (`harness reviewers plan {run_dir} PLAN.yaml`)")
    return progress
