"""What a suite asks of its GPUs, for `harness plan`: each candidate's requests per task, counted and measured on
the prompts a run would send, and each fine-tune's training rows; then the capacity plan sized for a GPU. The
suite's tasks and data are checked as a run checks them; the models' weights need not be here."""

from __future__ import annotations

from pathlib import Path

from harness import capacity
from harness.capacity import CapacityPlan, Gpu, TaskDemand, TrainingDemand
from harness.config import Candidate, load_suite
from harness.errors import ConfigError
from harness.plan import PlannedTask, RunPlan, plan_tasks
from harness.prompts import answer_of, render

# Training rows measured for their mean length (a seeded sample would change nothing at this precision).
MEASURED_ROWS = 200


def demands_of(run_plan: RunPlan) -> list[TaskDemand]:
    out = []
    for cand in run_plan.suite.candidates:
        for task in run_plan.tasks:
            if cand.runs(task.name):
                requests = run_plan.requests(task, cand)
                out.append(TaskDemand(cand.name, task.name, len(requests), sum(len(r.prompt) for r in requests),
                                      task.spec.generation.max_new_tokens))
    return out


def training_of(cand: Candidate, task: PlannedTask) -> TrainingDemand:
    """A fine-tune's training rows (after its limit and validation split) and their mean length in characters."""
    assert cand.finetune is not None
    spec, rows = task.spec_for(cand), task.data.train
    kept = min(len(rows), cand.finetune.limit or len(rows))
    examples = round(kept * (1 - cand.finetune.validation_fraction))
    sample = rows[:MEASURED_ROWS]
    chars = sum(len(render(spec, ex, [], task.data.labels).text) + len(answer_of(ex)) for ex in sample)
    return TrainingDemand(cand.name, examples, chars / max(len(sample), 1))


def capacity_plan(suite_file: Path, gpu: Gpu) -> CapacityPlan:
    suite = load_suite(suite_file)
    run_plan = RunPlan(suite, suite_file, plan_tasks(suite, suite_file))
    tasks = {t.name: t for t in run_plan.tasks}
    training = []
    for i, cand in enumerate(suite.candidates):
        if cand.finetune is not None:
            if cand.finetune.task not in tasks:
                raise ConfigError(suite_file, f"candidates.{i}.finetune.task",
                                  f"the suite has no task {cand.finetune.task!r}")
            training.append(training_of(cand, tasks[cand.finetune.task]))
    return capacity.plan_capacity(suite, suite_file, gpu, demands_of(run_plan), training)
