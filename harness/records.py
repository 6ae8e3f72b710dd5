"""The records that flow between stages: examples in, requests and completions, claims and findings,
metric results, comparisons and verdicts out, and the resample blocks the bootstrap draws.

This module imports nothing of the package, so every floor above can use it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np


def nan_to_none(record: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN or infinity: a value that does not exist (no latency for a failed request, no upper bound
    on a tail percentile of few requests) is written as null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}


@dataclass(frozen=True)
class Example:
    id: str
    inputs: dict[str, str]
    reference: str | list[str] | None
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def references(self) -> list[str]:
        if self.reference is None:
            return []
        return [self.reference] if isinstance(self.reference, str) else list(self.reference)


@dataclass(frozen=True)
class Request:
    example_id: str
    messages: list[dict[str, str]]
    prompt: str
    max_new_tokens: int
    temperature: float = 0.0
    stop: tuple[str, ...] = ()


@dataclass
class Completion:
    example_id: str
    candidate: str
    task: str
    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    e2e_s: float | None = None
    error: str | None = None
    attempts: int = 1
    # The run that generated it, where it was taken from the generation cache: it then carries no timing, since
    # latency is never reused.
    cached_from: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> Completion:
        return cls(**json.loads(line))

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Claim:
    """What a hallucination detector judges: an answer with the passage that should support it."""

    answer: str
    source: str
    question: str = ""
    references: tuple[str, ...] = ()  # reference answers count as support too


@dataclass(frozen=True)
class Finding:
    hallucinated: bool
    abstained: bool = False
    spans: tuple[str, ...] = ()      # the unsupported words, sentences or span the judge named
    score: float | None = None       # the detector's own confidence that the answer is hallucinated
    raw: str | None = None           # a judge's raw output
    # Why there is no verdict (a reply without one, a failed request): left out of the rates, counted in
    # `detector_unparsed`, never taken as "not hallucinated".
    error: str | None = None
    failed: bool = False             # the request itself failed (a timeout): not kept, so the next gate asks again

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        return cls(**{**data, "spans": tuple(data.get("spans", ()))})


@dataclass(frozen=True)
class Judgement:
    """An LLM judge's reading of one answer: a 1–5 score, 1/0 for pass/fail, or a pairwise outcome (1 win,
    0.5 tie or orders disagreeing, 0 loss). `score` is None when a reply had no verdict: counted, never guessed."""

    score: float | None
    raw: tuple[str, ...] = ()  # every reply the judge gave for it (two for pairwise: both orders)
    judged: bool = True  # False where nothing was asked (a candidate against itself)
    failed: bool = False  # a request failed (a timeout): unparsed now, not kept, so the next gate asks again

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Judgement:
        return cls(**{**data, "raw": tuple(data.get("raw", ()))})


class Resample:
    """A block of b bootstrap resamples of n examples, as indices (b, n); the counts view (how often each
    example occurs in each resample) is computed once and shared by every metric and candidate."""

    def __init__(self, idx: np.ndarray, first: int = 0) -> None:
        self.idx = idx
        self.first = first  # the place of its first resample in the whole series (a later block's is not 0)

    @classmethod
    def identity(cls, n: int) -> Resample:
        return cls(np.arange(n)[None, :])

    @property
    def size(self) -> int:
        return int(self.idx.shape[0])

    @cached_property
    def counts(self) -> np.ndarray:
        b, n = self.idx.shape
        flat = (self.idx + (np.arange(b) * n)[:, None]).ravel()
        return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)


class JsonRow:
    """A record written as one JSON object (NaN as null)."""

    def to_dict(self) -> dict[str, Any]:
        return nan_to_none(asdict(self))  # type: ignore[call-overload]


@dataclass(frozen=True)
class MetricResult(JsonRow):
    task: str
    candidate: str
    metric: str
    value: float
    ci_low: float
    ci_high: float
    n: int
    higher_is_better: bool
    confidence: float  # of the interval: the suite's bootstrap confidence


@dataclass(frozen=True)
class Comparison(JsonRow):
    task: str
    metric: str
    candidate: str
    baseline: str
    delta: float  # candidate - baseline
    ci_low: float
    ci_high: float
    p_value: float
    test: str
    n: int
    higher_is_better: bool
    confidence: float  # of the interval


@dataclass(frozen=True)
class Correction(JsonRow):
    """A machine-scored metric of one candidate on one task, raw and corrected by reviewers' labels (PPI++), with
    how many labels the correction stands on and, for a 0/1 machine, how it agrees with them."""

    task: str
    metric: str  # the machine-scored metric; the corrected one is `<metric>_corrected`
    candidate: str
    raw: float  # the machine's mean over every answer (missing values at the worst)
    raw_low: float
    raw_high: float
    value: float  # corrected (NaN below two labels)
    ci_low: float
    ci_high: float
    method: str  # "clt", or "human_only" where the labels' own exact interval stands in
    n: int  # answers
    labels: int  # labels used: the labelled prefix of the seeded order
    cannot_tell: int  # of those, counted at the worst
    confidence: float
    sensitivity: tuple[float, float, float] | None = None  # value, low, high (0/1 machines)
    specificity: tuple[float, float, float] | None = None

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Correction:
        """A corrected.json row back (null as NaN; a missing bound as unbounded)."""
        def number(key: str, missing: float = math.nan) -> float:
            return missing if row.get(key) is None else float(row[key])

        def rate(key: str) -> tuple[float, float, float] | None:
            found = row.get(key)
            return None if found is None else (float(found[0]), float(found[1]), float(found[2]))

        return cls(str(row["task"]), str(row["metric"]), str(row["candidate"]), number("raw"),
                   number("raw_low", -math.inf), number("raw_high", math.inf), number("value"),
                   number("ci_low", -math.inf), number("ci_high", math.inf), str(row["method"]), int(row["n"]),
                   int(row["labels"]), int(row["cannot_tell"]), float(row["confidence"]), rate("sensitivity"),
                   rate("specificity"))


Status = Literal["pass", "fail", "insufficient"]
STATUSES: tuple[Status, ...] = ("pass", "fail", "insufficient")


@dataclass(frozen=True)
class Verdict(JsonRow):
    criterion: str
    task: str
    metric: str
    candidate: str
    baseline: str | None
    threshold: float
    observed: float | None  # the value, or the improvement over the baseline
    ci_low: float | None
    ci_high: float | None
    n: int
    status: Status
    evidence: str
    p_value: float | None = None
    examples_needed: int | None = None
    confidence: float | None = None  # of the interval, where there is one: the manifest's confidence


Alarm = Literal["ok", "alert", "insufficient", "info"]
ALARMS: tuple[Alarm, ...] = ("ok", "alert", "insufficient", "info")


@dataclass(frozen=True)
class Reading(JsonRow):
    """One monitored signal on one window of traffic, and what its rule makes of it (`info`: no rule)."""

    window: str
    signal: str
    value: float
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    n: int
    status: Alarm
    rule: str | None
    evidence: str
