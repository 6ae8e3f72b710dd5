"""run.json as a typed record: what a run was (suite and task snapshots, seed, bootstrap, versions, machine), what
happened on the way (status, timings, dtypes, data checks, adapters and their probes, prompting) and how it ended
(failed requests, error). Readers get attributes, not string keys; the store reads and writes it.

Older run directories load as they are: a field an older harness did not write takes its default, and the
before-validator refuses a record from a newer harness rather than misread it. The suite and manifest stay the
JSON snapshots they were dumped as; `harness.snapshots` validates them (and upgrades schema-1 suites), since their
models sit floors above this one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from harness.errors import HarnessError
from harness.records import MetricResult

# 2: a candidate's snapshot holds only its own backend's settings, a task's only its detector's.
# 3: metrics.json rows carry their confidence level (rows written before take the run's bootstrap confidence).
SCHEMA_VERSION = 3

RunStatus = Literal["running", "interrupted", "failed", "complete", "incomplete"]
PromptSource = Literal["lineage", "suite"]


class _Part(BaseModel):
    # Frozen: a record is written whole, never patched. A key no field names is ignored: readers need only theirs,
    # and the schema version, not the key set, says what a record means.
    model_config = ConfigDict(frozen=True, extra="ignore")


class BootstrapSettings(_Part):
    resamples: int
    confidence: float = 0.95


class Machine(_Part):
    native_dtype: str | None = None  # written since the one dtype rule for every "auto"


class DetectorRecord(_Part):
    """The detector a task's findings came from: name, version and its settings (beside them, as it describes
    itself)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    name: str
    version: str


class TaskRecord(_Part):
    version: int
    kind: str
    file: str
    task_sha256: str
    data_sha256: dict[str, str]  # file path (or dataset@revision:split) -> sha256 (or fingerprint)
    data_revisions: dict[str, str] = {}  # data identity -> the commit a moving revision (DVC's HEAD) resolved to
    n_test: int
    n_train: int
    limit: int | None = None
    sample: int | None = None
    metrics: list[str]
    detector: DetectorRecord | None = None


class TaskDataReport(BaseModel):
    """One task's data check (data_check.check_task fills it in as it finds things, hence not frozen)."""

    model_config = ConfigDict(extra="ignore")

    task: str
    sizes: dict[str, int]
    exact_duplicates: dict[str, int]
    near_duplicates: dict[str, int]
    overlap: int
    overlap_ids: list[str]
    length_unit: str
    lengths: dict[str, dict[str, float | int]]  # split -> mean, p50, p95 and max (a count)
    labels: dict[str, dict[str, int]] | None = None
    imbalance: float | None = None  # most / fewest training examples of a label
    warnings: list[str] = []
    blocking: list[str] = []


class ProbeExample(_Part):
    example_id: str
    base: str
    adapted: str


class ProbeResult(_Part):
    """How an adapter's answers to a few of its own prompts differ from its base model's (adapter_probe.py)."""

    adapter: str
    probes: int
    differing: int
    accepted_unchanged: bool
    examples: list[ProbeExample]  # the first few


class PromptingRecord(_Part):
    """Where an adapter candidate's prompt and chat-template setting on one task came from, and why."""

    prompt: PromptSource
    chat: PromptSource
    why: str


class AnswerCount(_Part):
    """Where a candidate's answers on a task came from."""

    generated: int = 0  # by this run (timed by it)
    reused: int = 0  # from the generation cache (no timing)
    from_runs: dict[str, int] = {}  # run id -> answers reused from it


class CacheRecord(_Part):
    """How the generation cache served a run."""

    enabled: bool  # false: `--no-cache`, nothing read or written
    answers: dict[str, dict[str, AnswerCount]] = {}  # candidate -> task -> counts
    weights: dict[str, str] = {}  # candidate -> how its weights were identified in the cache key

    @property
    def reused(self) -> int:
        return sum(c.reused for per_task in self.answers.values() for c in per_task.values())

    @property
    def generated(self) -> int:
        return sum(c.generated for per_task in self.answers.values() for c in per_task.values())


class RunRecord(_Part):
    schema_version: int
    run_id: str
    status: RunStatus
    suite_name: str
    suite_file: str
    suite_sha256: str
    suite: dict[str, Any]  # the Suite as dumped: harness.snapshots.suite_of
    tasks: dict[str, TaskRecord]
    seed: int
    bootstrap: BootstrapSettings
    versions: dict[str, str]
    machine: Machine = Machine()
    git_revision: str | None
    started_at: str
    finished_at: str | None
    timings_s: dict[str, float]  # per stage: CANDIDATE/finetune, CANDIDATE/load, CANDIDATE/TASK, scoring
    dtypes: dict[str, str | None] = {}  # per stage: CANDIDATE/finetune, CANDIDATE/generate
    in_process: bool = False
    rehearsal: list[str] = []  # `--rehearse`: each model's stand-in and what else the CPU changed; empty for a real run
    manifest: dict[str, Any] | None = None  # the Manifest as dumped: harness.snapshots.manifest_of
    data_check: list[TaskDataReport] = []
    adapters: dict[str, str] = {}  # fine-tuned candidate -> its adapter folder
    adapter_probes: dict[str, ProbeResult] = {}
    prompting: dict[str, dict[str, PromptingRecord]] = {}  # candidate -> task -> how it is prompted
    failed_requests: int | None = None  # once scored
    error: str | None = None  # why a run `failed`
    cache: CacheRecord | None = None  # written since the generation cache
    requests_sha256: dict[str, dict[str, str]] = {}  # candidate -> task -> digest of what it was asked (rescoring)
    rescored_from: str | None = None  # `harness rescore`: the run whose answers these are

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        """A record of an older schema reads as it is (its missing fields take their defaults); a newer one
        may mean something this harness does not know, so it is refused."""
        if isinstance(data, dict):
            version = data.get("schema_version")
            if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
                # "9" or 9.0 would be read as 9 by pydantic after this check, and true as schema 1.
                raise ValueError(f"schema_version {version!r} is not a whole number")
            if version is not None and version > SCHEMA_VERSION:
                raise ValueError(f"schema {version} is newer than this harness reads ({SCHEMA_VERSION}); "
                                 "update the harness")
        return data

    @classmethod
    def read(cls, data: Any, where: Path) -> RunRecord:
        """The record from run.json's parsed content; anything else is one line naming the file and field."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            field, message = first_error(exc)
            raise unreadable(where, field, message) from None


class MetricRow(_Part):
    """A metrics.json row as written: JSON has no NaN or infinity, so a missing value or bound is null."""

    task: str
    candidate: str
    metric: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    higher_is_better: bool
    confidence: float | None = None  # absent before schema 3

    def result(self, run_confidence: float) -> MetricResult:
        """As scoring made it: no value is NaN, and a bound that does not exist (a tail percentile of few
        requests) is infinite, so it reaches any value; a row without its confidence takes the run's."""
        return MetricResult(self.task, self.candidate, self.metric,
                            float("nan") if self.value is None else self.value,
                            float("-inf") if self.ci_low is None else self.ci_low,
                            float("inf") if self.ci_high is None else self.ci_high,
                            self.n, self.higher_is_better,
                            run_confidence if self.confidence is None else self.confidence)


def first_error(exc: ValidationError) -> tuple[str | None, str]:
    """The first error's field as written in the file (`tasks.qa.n_test`, `0.value`) and its message."""
    error = exc.errors()[0]
    return ".".join(str(p) for p in error["loc"]) or None, error["msg"].removeprefix("Value error, ")


def unreadable(where: Path, field: str | None, message: str) -> HarnessError:
    return HarnessError(f"{where}: not a run record this harness can read ({f'{field}: ' if field else ''}{message})")
