"""A review plan, as its author writes it (`harness reviewers plan RUN PLAN.yaml`): which outputs of a run
reviewers rate, in which mode, how many reviewers per item (`overlap`), and gold items with a known answer
that show a careless reviewer. Drawing the items is here; handing them out is `assignments.py`.

    mode: scores            # or blind (side by side)
    overlap: 3              # reviewers per item, exactly
    tasks: [support]        # default: every task of the run
    candidates: [base, ft]  # default: every candidate
    items: 40               # examples per task, drawn uniformly with the seed (default: all)
    gold:
      - {task: support, example_id: "17", answer: "Your card ships in 90 days.", accuracy: 1}
"""

from __future__ import annotations

import random
from collections.abc import Collection
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from harness.errors import ConfigError
from harness.loading import read_yaml, validate
from harness.ratings import Output
from harness.schema import Settings

SCORES_RUBRIC = """Rate the output for the task shown, reading the example's input and reference first.
- Factual accuracy: 5 every statement is correct and supported by the input or reference; 3 a minor error
  or an unsupported detail; 1 a wrong or invented answer.
- Coherence: 5 reads as one clear, well-ordered answer; 1 contradicts itself or cannot be followed.
- Conciseness: 5 says what is needed and nothing more; 1 padded, repetitive or off-topic.
Rate the output as written, not the model you think wrote it."""
BLIND_RUBRIC = """Pick the output that better does the task for the example shown: correct and supported first,
then clear, then concise. Choose Tie only when neither is better. Length alone is no reason to prefer."""


class GoldItem(Settings):
    """An item whose right answer is known. Scores mode: a planted `answer` and the factual accuracy it deserves
    (a rating within one point is right). Blind mode: a `better` and a `worse` answer (a tie is wrong)."""

    task: str
    example_id: str
    answer: str | None = None
    accuracy: Annotated[int, Field(ge=1, le=5)] | None = None
    better: str | None = None
    worse: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> GoldItem:
        scores = self.answer is not None or self.accuracy is not None
        blind = self.better is not None or self.worse is not None
        if scores and blind:
            raise ValueError("give answer and accuracy (scores mode) or better and worse (blind mode), not both")
        if scores and (self.answer is None or self.accuracy is None):
            raise ValueError("a scores-mode gold item needs both answer and accuracy")
        if blind and (self.better is None or self.worse is None):
            raise ValueError("a blind gold item needs both better and worse")
        if not scores and not blind:
            raise ValueError("give answer and accuracy (scores mode) or better and worse (blind mode)")
        return self

    @property
    def mode(self) -> str:
        return "scores" if self.answer is not None else "blind"


class ReviewPlan(Settings):
    mode: Literal["scores", "blind"] = "scores"
    overlap: Annotated[int, Field(ge=1, le=50)] = 3
    tasks: list[str] | None = None
    candidates: list[str] | None = None
    items: Annotated[int, Field(ge=1)] | None = None
    seed: int = 0
    claim_minutes: Annotated[float, Field(gt=0)] = Field(
        30.0, description="an item shown to a reviewer is theirs this long; unsaved, it goes back to the pool")
    rubric: str | None = None
    gold: list[GoldItem] = Field(default_factory=list)
    gold_min_right: Annotated[float, Field(ge=0, le=1)] = Field(
        0.75, description="a reviewer right on fewer of the gold items they rated is flagged")
    leave_out_flagged: bool = Field(True, description="a flagged reviewer's ratings do not count in the gate")

    @field_validator("tasks", "candidates")
    @classmethod
    def _distinct(cls, names: list[str] | None) -> list[str] | None:
        if names is not None and not names:
            raise ValueError("name at least one, or leave it out for all")
        if names is not None and len(set(names)) < len(names):
            raise ValueError(f"{sorted({n for n in names if names.count(n) > 1})[0]!r} is listed twice")
        return names

    @property
    def shown_rubric(self) -> str:
        return self.rubric or (SCORES_RUBRIC if self.mode == "scores" else BLIND_RUBRIC)

    def gold_flag_after(self) -> int:
        """How many gold items a reviewer rates before their share right is judged."""
        return min(3, len(self.gold))


@dataclass(frozen=True)
class ReviewItem:
    """One thing to rate: a candidate's output (scores), two candidates' outputs (blind), or gold item
    number `gold` of the plan (its candidates empty)."""

    task: str
    example_id: str
    candidates: tuple[str, ...]
    gold: int = -1

    @property
    def key(self) -> str:
        return "\x1f".join((self.task, self.example_id, *self.candidates, str(self.gold)))

    @property
    def is_gold(self) -> bool:
        return self.gold >= 0


def load_review_plan(path: Path) -> ReviewPlan:
    plan: ReviewPlan = validate(ReviewPlan, read_yaml(path), path)
    return plan


def draw_items(plan: ReviewPlan, path: Path | str, outputs: Collection[Output]) -> list[ReviewItem]:
    """The plan's items on a run's outputs (each task, example and candidate that has an answer): `items`
    examples per task drawn uniformly with the seed, every planned candidate's output (scores) or pair of them
    (blind) that the run has, then the gold items. A task, candidate or gold example the run does not have is
    refused, naming the plan's field."""
    examples: dict[str, set[str]] = {}
    candidates: dict[str, list[str]] = {}
    for answer in outputs:
        examples.setdefault(answer.task, set()).add(answer.example_id)
        if answer.candidate not in candidates.setdefault(answer.task, []):
            candidates[answer.task].append(answer.candidate)
    tasks = plan.tasks if plan.tasks is not None else sorted(examples)
    for i, task in enumerate(tasks):
        if task not in examples:
            raise ConfigError(path, f"tasks.{i}",
                              f"the run has no task {task!r} (it has {', '.join(sorted(examples))})")
    for i, name in enumerate(plan.candidates or []):
        if not any(name in candidates[t] for t in tasks):
            raise ConfigError(path, f"candidates.{i}", f"no planned task of the run has candidate {name!r}")
    have = set(outputs)
    out: list[ReviewItem] = []
    for task in tasks:
        cands = sorted(c for c in candidates[task] if plan.candidates is None or c in plan.candidates)
        ids = sorted(examples[task])  # the draw depends on the ids only, not on the order answers came in
        if plan.items is not None and plan.items < len(ids):
            ids = sorted(random.Random(f"{plan.seed}\0{task}").sample(ids, plan.items))
        groups = [(c,) for c in cands] if plan.mode == "scores" else list(combinations(cands, 2))
        out += [ReviewItem(task, ex, group) for ex in ids for group in groups
                if all(Output(task, ex, c) in have for c in group)]  # an unfinished run lacks some answers
    for i, g in enumerate(plan.gold):
        if g.mode != plan.mode:
            raise ConfigError(path, f"gold.{i}", f"a {g.mode}-mode gold item in a {plan.mode} plan")
        if g.task not in tasks:
            raise ConfigError(path, f"gold.{i}.task", f"{g.task!r} is not a planned task")
        if g.example_id not in examples[g.task]:
            raise ConfigError(path, f"gold.{i}.example_id", f"task {g.task!r} has no example {g.example_id!r}")
        out.append(ReviewItem(g.task, g.example_id, (), gold=i))
    if not any(not item.is_gold for item in out):
        raise ConfigError(path, "candidates" if plan.mode == "scores" else "mode",
                          "the plan draws no output to rate" + ("" if plan.mode == "scores" else
                                                                 ": blind mode needs two candidates on a task"))
    return out
