"""The success manifest as its author writes it: criteria per task (absolute, or against a baseline) and how
deployed traffic is watched. Resolving criteria into verdicts is `manifest.py`; a suite holds a manifest
(`config.Suite.manifest`) or names its file."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from harness.schema import Settings


class Criterion(Settings):
    task: str
    metric: str
    candidate: str
    at_least: float | None = None
    at_most: float | None = None
    better_than: str | None = None
    by: Annotated[float, Field(ge=0)] | None = None
    not_worse_than: str | None = None
    margin: Annotated[float, Field(ge=0)] | None = None
    against: str | None = Field(None, description="human_win_rate: the one opponent, from the blind comparisons "
                                "between exactly these two (default: every candidate shown beside it, pooled)")
    slice: str | None = Field(None, description="a slicing of the task: with `worst: true` every slice must meet "
                              "at_least / at_most; with `max_gap` the best and worst slice may differ by at most that")
    worst: bool = False
    max_gap: Annotated[float, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _one_rule(self) -> Criterion:
        rules = [r for r in ("at_least", "at_most", "better_than", "not_worse_than", "max_gap")
                 if getattr(self, r) is not None]
        if len(rules) != 1:
            raise ValueError("give exactly one of at_least, at_most, better_than, not_worse_than, max_gap"
                             + (f" (got {' and '.join(rules)})" if rules else ""))
        if (self.worst or self.max_gap is not None) and self.slice is None:
            raise ValueError(f"`{'worst' if self.worst else 'max_gap'}` needs `slice` (the slicing it is about)")
        if self.slice is not None and not (self.max_gap is not None or (self.worst and self.baseline is None)):
            raise ValueError("`slice` goes with `worst: true` and at_least or at_most, or with `max_gap`")
        if self.worst and self.max_gap is not None:
            raise ValueError("`worst` goes with at_least or at_most, not with `max_gap`")
        if self.by is not None and self.better_than is None:
            raise ValueError("`by` goes with `better_than`")
        if self.margin is not None and self.not_worse_than is None:
            raise ValueError("`margin` goes with `not_worse_than`")
        if self.baseline == self.candidate or self.against == self.candidate:
            raise ValueError(f"candidate {self.candidate!r} is compared with itself")
        if self.against is not None and self.baseline is not None:
            raise ValueError("`against` goes with at_least or at_most (it names a blind comparison's opponent)")
        return self

    @property
    def baseline(self) -> str | None:
        return self.better_than or self.not_worse_than

    def describe(self) -> str:
        if self.max_gap is not None:
            return f"{self.task} {self.metric} of {self.candidate}: gap between {self.slice} slices <= {self.max_gap:g}"
        where = f" on every {self.slice} slice" if self.slice is not None else ""
        if self.at_least is not None:
            rule = f">= {self.at_least:g}"
        elif self.at_most is not None:
            rule = f"<= {self.at_most:g}"
        elif self.better_than is not None:
            rule = f"better than {self.better_than} by {self.by or 0:g}"
        else:
            rule = f"not worse than {self.not_worse_than} by more than {self.margin or 0:g}"
        versus = f" against {self.against}" if self.against else ""
        return f"{self.task} {self.metric} of {self.candidate}{versus}{where} {rule}"


class MonitorRule(Settings):
    """When a monitored signal (a drift signal, or a task metric on the traffic) raises an alert."""

    signal: str = Field(description="a drift signal (domain_auc, new_term_rate, …) or a metric of the task")
    at_most: float | None = None
    at_least: float | None = None
    p_below: Annotated[float, Field(gt=0, lt=1)] | None = Field(
        None, description="for a test signal (label_shift): alert when its p-value is below this")

    @model_validator(mode="after")
    def _one_rule(self) -> MonitorRule:
        rules = [r for r in ("at_most", "at_least", "p_below") if getattr(self, r) is not None]
        if len(rules) != 1:
            raise ValueError("give exactly one of at_most, at_least, p_below"
                             + (f" (got {' and '.join(rules)})" if rules else ""))
        return self

    def describe(self) -> str:
        """What holds while all is well: `<= 0.7`, `>= -0.33`, `p >= 0.01`."""
        if self.at_most is not None:
            return f"<= {self.at_most:g}"
        if self.at_least is not None:
            return f">= {self.at_least:g}"
        return f"p >= {self.p_below:g}"


class MonitorSpec(Settings):
    """How production traffic is watched: windows, the reference it is compared with, and alert rules."""

    window: Literal["day", "week", "month", "all"] = "day"
    reference: Literal["train", "test"] = Field(
        "train", description="the task's training split (test when it has none), or the test split that was gated")
    min_rows: Annotated[int, Field(ge=1)] = Field(30, description="a smaller window is `insufficient`")
    confidence: Annotated[float, Field(gt=0.5, lt=1)] = 0.95
    resamples: Annotated[int, Field(ge=100)] = 1000
    sample_rows: Annotated[int, Field(ge=100)] = Field(
        20000, description="rows of a window (and of the whole log) kept for the task's metrics and the signals that "
        "do not stream; a larger one is sampled uniformly (seeded), and its readings say so")
    rules: list[MonitorRule] | None = Field(
        None, description="alert rules; default: each drift signal's own (see `harness monitor --help`)")
    seed: Annotated[int, Field(ge=0)] = 0


class Manifest(Settings):
    min_examples: Annotated[int, Field(ge=1)] = Field(1, description="examples with a value a criterion needs")
    confidence: Annotated[float, Field(gt=0.5, lt=1)] = 0.95
    max_error_rate: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.0, description="share of failed requests a candidate may have; above it its criteria are insufficient, "
        "at or below it each failed request counts at the metric's worst")
    max_unparsed: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.1, description="share of a detector's or judge's verdicts that may be missing (unparsed reply, failed "
        "call) before a criterion on the judged metric is insufficient")
    holm: bool = Field(False, description="Holm-correct the passing decisions across all criteria")
    criteria: list[Criterion]
    monitor: MonitorSpec | None = Field(None, description="how deployed traffic is watched (harness monitor)")

    @model_validator(mode="after")
    def _not_empty(self) -> Manifest:
        if not self.criteria:
            raise ValueError("a manifest needs at least one criterion")
        return self
