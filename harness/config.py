"""Typed models of tasks, candidates and suites, loaded from YAML and validated at load time.

Every model rejects unknown keys, and every error names the file and the field.
"""

from __future__ import annotations

import operator
from functools import reduce
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    Discriminator,
    Field,
    SerializerFunctionWrapHandler,
    Tag,
    field_validator,
    model_serializer,
    model_validator,
)

from harness.backends import BACKENDS, BackendOptions, Deployment
from harness.backends.hf_local import HFOptions
from harness.backends.judge_model import JudgeModel
from harness.detectors import DETECTORS, DetectorOptions
from harness.detectors.grounding import GroundingOptions
from harness.errors import ConfigError
from harness.finetune_spec import FinetuneSpec
from harness.loading import read_yaml, validate
from harness.manifest_spec import Manifest
from harness.schema import SafeName, Settings
from harness.slice_spec import Slicing
from harness.sources import SOURCES, DataSource
from harness.sources.base import claiming, either

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TASKS_DIR = PROJECT_ROOT / "tasks"

TaskKind = Literal["classification", "generation", "grounded_qa"]


def _source_kind(value: Any) -> str | None:
    # The source is told by the keys the task wrote; a block with none of any source's is read as files, the
    # source whose settings sit flat in the block.
    if isinstance(value, DataSource):
        return value.kind
    return next((cls.kind for cls in claiming(value).values()), "files") if isinstance(value, dict) else None


if TYPE_CHECKING:  # what every registered model is; pydantic validates against the union of them
    AnyDataSource = DataSource
else:
    AnyDataSource = Annotated[reduce(operator.or_, [Annotated[cls, Tag(cls.kind)] for cls in SOURCES.values()]),
                              Discriminator(_source_kind)]


class DataSpec(Settings):
    """The task's columns, and where its rows come from: the registered source whose settings the block holds
    (files: `test`, `train`, `path`…; `dataset: {…}`; `dvc: {…}`). In YAML the source's settings sit beside the
    columns; they are gathered into `source`, validated by the source's model, and written back flat."""

    inputs: dict[str, str] = Field(description="prompt variable -> column")
    reference: str | list[str] | None = Field(None, description="column, or columns of several references")
    id: str | None = Field(None, description="column holding a stable example id; else a hash of the inputs")
    source: AnyDataSource

    @model_validator(mode="before")
    @classmethod
    def _gather_source(cls, data: Any) -> Any:
        if not isinstance(data, dict) or isinstance(data.get("source"), DataSource):
            return data
        common = {k: v for k, v in data.items() if k in cls.model_fields and k != "source"}
        rest = {k: v for k, v in data.items() if k not in common}
        chosen = claiming(rest)
        if len(chosen) > 1:
            (a, one), (b, other), *_ = chosen.items()
            raise ValueError(f"`{a}` and `{b}` are settings of two sources of rows ({one.kind}, {other.kind}); "
                             f"give one: {either()}")
        if not rest:
            raise ValueError(f"{either()} is required")
        return {**common, "source": rest}

    @model_serializer(mode="wrap")
    def _flat(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        source = out.pop("source")
        return {**out, **source}

    @model_validator(mode="after")
    def _has_inputs(self) -> DataSpec:
        if not self.inputs:
            raise ValueError("`inputs` must map at least one prompt variable to a column")
        return self


class PromptSpec(Settings):
    system: str | None = None
    template: str = Field(description="user message with {variable} slots from data.inputs")
    answer_prefix: str = Field("", description="text the answer follows in a plain (non-chat) prompt")
    few_shot_separator: str = "\n\n"


class PromptOverride(Settings):
    """A candidate's changes to one task's prompt (e.g. a fine-tune that learned the label set needs no list)."""

    system: str | None = None
    template: str | None = None
    answer_prefix: str | None = None

    def apply(self, prompt: PromptSpec) -> PromptSpec:
        return prompt.model_copy(update=self.model_dump(exclude_none=True))


class GenerationSpec(Settings):
    max_new_tokens: Annotated[int, Field(gt=0)] = 64
    temperature: Annotated[float, Field(ge=0)] = 0.0
    stop: list[str] = Field(default_factory=list)


class EvaluateMetricSpec(Settings):
    """A metric from a Hugging Face `evaluate` module, scored with the same intervals and paired tests as ours."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")] = Field(
        description="the metric's name in reports and manifest criteria")
    evaluate: str = Field(description="a module: a local .py file or folder (relative to the task), or a hub id "
                          "such as `exact_match` (offline it must be in the evaluate cache)")
    args: dict[str, Any] = Field(default_factory=dict, description="keyword arguments for compute()")
    key: str | None = Field(None, description="the result to use when compute() returns several")
    per_example: bool = Field(True, description="true: the module scores each answer alone and the metric is their "
                              "mean; false: corpus-level, recomputed on each bootstrap resample (up to max_resamples)")
    max_resamples: Annotated[int, Field(ge=50)] = 200
    predictions: Literal["text", "label"] = Field("text", description="label: the parsed label (classification)")
    references: Literal["first", "all"] = Field("first", description="all: a list of references per answer")
    higher_is_better: bool = True


class JudgeMetricSpec(Settings):
    """An LLM judge scoring answers with a versioned rubric: 1–5 or pass/fail per answer, or pairwise against a
    candidate (judged in both orders)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")] = Field(
        description="the metric's name; `<name>_unparsed` (share of replies with no verdict) comes with it")
    judge: str = Field(description="the judging model: embedded name or local folder, the served model's name "
                       "with `url`, or a suite candidate's name with `candidate: true`")
    url: str | None = Field(None, description="base URL of an OpenAI-compatible server (vLLM)")
    api_key_env: str | None = None
    candidate: bool = Field(False, description="`judge` names a suite candidate, judged on its own backend")
    rubric: str = Field(description="the criteria the judge applies, inline or a .txt/.md file beside the task")
    rubric_version: str = Field("1", description="bump when the rubric changes: kept judgements are keyed by it")
    scale: Literal["1-5", "pass_fail"] = "1-5"
    against: str | None = Field(None, description="pairwise: win rate of each candidate against this one, each "
                                "pair judged in both orders (a win must hold in both, else it counts as a tie)")
    max_new_tokens: Annotated[int, Field(gt=0)] = 64

    @property
    def judge_model(self) -> JudgeModel | None:
        """The model the judge runs on, as the judge detector's; None for a suite candidate (its own backend)."""
        return None if self.candidate else JudgeModel(model=self.judge, url=self.url, api_key_env=self.api_key_env)


def _metric_kind(entry: Any) -> str | None:
    # Told apart by their own key, so that an error names the fields of the kind the user meant.
    if isinstance(entry, str | EvaluateMetricSpec | JudgeMetricSpec):
        return {str: "name", EvaluateMetricSpec: "evaluate", JudgeMetricSpec: "judge"}[type(entry)]
    if isinstance(entry, dict):
        return "judge" if "judge" in entry else "evaluate" if "evaluate" in entry else None
    return None


MetricEntry = Annotated[
    Annotated[str, Tag("name")] | Annotated[EvaluateMetricSpec, Tag("evaluate")]
    | Annotated[JudgeMetricSpec, Tag("judge")],
    Discriminator(_metric_kind, custom_error_type="metric_entry",
                  custom_error_message="a metric is a name, or a mapping with `evaluate:` or `judge:`"),
]


class TaskSpec(Settings):
    name: SafeName
    version: int = 1
    kind: TaskKind
    description: str = ""
    data: DataSpec
    prompt: PromptSpec
    labels: list[str] | str | None = Field(None, description="label list, or a JSON file holding one")
    source: str | None = Field(None, description="input variable holding the grounding passage")
    metrics: list[MetricEntry] = Field(min_length=1, description="registered metric names, or definitions: "
                                               "{evaluate: module, name: …} or {judge: model, rubric: …, name: …}")
    generation: GenerationSpec = GenerationSpec()
    slices: list[Slicing] = Field(default_factory=list, description="how its test examples are cut into slices")
    licence: str | None = None
    # The YAML file itself: data paths are relative to its folder, errors name it.
    file: Path = Field(Path("task.yaml"), exclude=True)

    @property
    def base_dir(self) -> Path:
        return self.file.parent

    @property
    def metric_names(self) -> list[str]:
        """Every metric the task scores, by name (a judge brings its unparsed-reply share)."""
        out: list[str] = []
        for m in self.metrics:
            if isinstance(m, str):
                out.append(m)
            else:
                out += [m.name, f"{m.name}_unparsed"] if isinstance(m, JudgeMetricSpec) else [m.name]
        return out

    @model_validator(mode="after")
    def _kind_needs(self) -> TaskSpec:
        if self.kind == "classification" and not self.labels:
            raise ValueError("a classification task needs `labels`")
        if self.kind != "classification" and self.data.reference is None:
            raise ValueError(f"a {self.kind} task needs `data.reference`")
        if self.kind == "grounded_qa" and not self.source:
            raise ValueError("a grounded_qa task needs `source` (the input holding the passage)")
        if self.source and self.source not in self.data.inputs:
            raise ValueError(f"`source` {self.source!r} is not one of data.inputs {sorted(self.data.inputs)}")
        return self


# A candidate's backend settings and a task's detector settings: one registered options model each, told
# apart by `backend` / `name` (pydantic's discriminated union, so errors name the field of the chosen one).
if TYPE_CHECKING:  # what every registered model is; pydantic validates against the union of them
    AnyBackendOptions = BackendOptions
    AnyDetectorOptions = DetectorOptions
else:
    AnyBackendOptions = Annotated[reduce(operator.or_, BACKENDS.values()), Field(discriminator="backend")]
    AnyDetectorOptions = Annotated[reduce(operator.or_, DETECTORS.values()), Field(discriminator="name")]


class TaskRef(Settings):
    """A task as a suite uses it: by name or path, optionally cut down for quick runs."""

    task: str
    limit: Annotated[int, Field(gt=0)] | None = None
    sample: Annotated[int, Field(gt=0)] | None = Field(
        None, description="seeded sample of this many test examples, stratified by label"
    )
    detector: AnyDetectorOptions = GroundingOptions()
    slices: list[Slicing] = Field(default_factory=list, description="more slicings, beside the task's own")

    @field_validator("detector", mode="before")
    @classmethod
    def _default_detector(cls, value: Any) -> Any:
        return {"name": "grounding", **value} if isinstance(value, dict) else value


class Candidate(Settings):
    """A model to score: the fields every candidate has, plus its backend's own settings (`options`).

    In YAML the backend's settings sit beside the common fields (`backend: vllm`, `serve: …`); they are
    gathered into `options` and validated by the backend's registered model, and written back flat.
    """

    name: SafeName
    model: str = Field(description="embedded model name, local directory, hub id, or served model name")
    adapter: str | None = Field(None, description="directory of a peft LoRA adapter")
    few_shot: Annotated[int, Field(ge=0)] = 0
    cost_per_hour: Annotated[float, Field(ge=0)] = 0.0
    finetune: FinetuneSpec | None = None
    tasks: list[str] | None = Field(None, description="score this candidate on these suite tasks only (default: all)")
    prompts: dict[str, PromptOverride] = Field(default_factory=dict, description="prompt changes per task name")
    accept_unchanged_adapter: bool = Field(
        False, description="score the adapter even if it answers the probe prompts exactly as its base does")
    options: AnyBackendOptions = Field(default_factory=HFOptions)

    @model_validator(mode="before")
    @classmethod
    def _gather_options(cls, data: Any) -> Any:
        if isinstance(data, dict) and "options" not in data:
            common = {k: v for k, v in data.items() if k in cls.model_fields}
            options = {k: v for k, v in data.items() if k not in cls.model_fields}
            return {**common, "options": {"backend": "hf", **options}}
        return data

    @model_serializer(mode="wrap")
    def _flat(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        options = out.pop("options")
        return {**out, **options}

    @model_validator(mode="after")
    def _adapter_or_finetune(self) -> Candidate:
        if self.finetune is not None and self.adapter:
            raise ValueError("give either `adapter` or `finetune`, not both")
        return self

    @property
    def backend(self) -> str:
        return self.options.backend

    def runs(self, task: str) -> bool:
        return self.tasks is None or task in self.tasks

    def deployment(self, adapter: str | None = None, lora_rank: int | None = None) -> Deployment:
        """What its backend needs: the adapter given (a trained one) or its own."""
        return Deployment(self.name, self.model, adapter or self.adapter, self.options, lora_rank)


class BootstrapSpec(Settings):
    resamples: Annotated[int, Field(ge=100)] = 1000
    confidence: Annotated[float, Field(gt=0.5, lt=1)] = 0.95


class TrackingSpec(Settings):
    """Where a run is logged in MLflow (parameters, metrics with their intervals, the verdict, the run's files)."""

    uri: str | None = Field(None, description="MLflow tracking URI (http://…, sqlite:///…); default: a local store "
                            "in RESULTS/mlflow/, no server needed")
    experiment: str | None = Field(None, description="experiment name; default: the suite's name")
    register_adapters: bool = Field(False, description="register each adapter in the MLflow model registry when "
                                    "the run's gate passes (every criterion)")


class Suite(Settings):
    name: SafeName
    description: str = ""
    seed: Annotated[int, Field(ge=0)] = 0
    tasks: list[TaskRef]
    candidates: list[Candidate]
    bootstrap: BootstrapSpec = BootstrapSpec()
    allow_overlap: bool = Field(False, description="let test examples that also occur in train pass the data check")
    manifest: Manifest | str | None = Field(None, description="success criteria, inline or a YAML file")
    tracking: TrackingSpec | None = Field(None, description="log every run to MLflow (`harness run --track` too)")

    @field_validator("tasks", mode="before")
    @classmethod
    def _names_to_refs(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"task": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _unique(self) -> Suite:
        for what, names in (("candidates", [c.name for c in self.candidates]),
                            ("tasks", [t.task for t in self.tasks])):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"duplicate {what}: {', '.join(dupes)}")
        if not self.tasks or not self.candidates:
            raise ValueError("a suite needs at least one task and one candidate")
        return self

    def candidates_of(self, task: str) -> list[Candidate]:
        """The candidates scored on a task (a candidate may be limited to some tasks)."""
        return [c for c in self.candidates if c.runs(task)]

    def candidate(self, name: str) -> Candidate:
        for c in self.candidates:
            if c.name == name:
                return c
        raise ConfigError("suite", "candidates", f"no candidate named {name!r}")


def load_task(ref: str, relative_to: Path | None = None) -> TaskSpec:
    """A task by name (tasks/<name>/task.yaml) or by path to its YAML file."""
    candidates = []
    as_path = Path(ref)
    if relative_to is not None and not as_path.is_absolute():
        candidates.append(relative_to / as_path)
    candidates += [as_path, TASKS_DIR / ref / "task.yaml", TASKS_DIR / f"{ref}.yaml"]
    for path in candidates:
        if path.is_file():
            path = path.resolve()
            return validate(TaskSpec, read_yaml(path), path, file=path)
    raise ConfigError(relative_to or ".", "tasks", f"unknown task {ref!r} (not a file, nor in {TASKS_DIR})")


def load_suite(path: str | Path) -> Suite:
    path = Path(path)
    return validate(Suite, read_yaml(path), path)

