"""Typed models of tasks, candidates and suites, loaded from YAML and validated at load time.

Every model rejects unknown keys, and every error names the file and the field.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TASKS_DIR = PROJECT_ROOT / "tasks"

TaskKind = Literal["classification", "generation", "grounded_qa"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitSpec(Strict):
    """A seeded split of one file into train and test."""

    test_size: Annotated[float, Field(gt=0, lt=1)] = 0.2
    seed: int = 0


class DataSpec(Strict):
    test: str | None = None
    train: str | None = None
    path: str | None = Field(None, description="one file to split into train and test with `split`")
    split: SplitSpec | None = None
    format: Literal["auto", "jsonl", "csv", "parquet"] = "auto"
    inputs: dict[str, str] = Field(description="prompt variable -> column")
    reference: str | list[str] | None = Field(None, description="column, or columns of several references")
    id: str | None = Field(None, description="column holding a stable example id; else a hash of the inputs")

    @model_validator(mode="after")
    def _one_source(self) -> DataSpec:
        if self.path and (self.test or self.train):
            raise ValueError("give either `path` (with `split`) or `test`/`train`, not both")
        if not self.path and not self.test:
            raise ValueError("`test` (or `path` with `split`) is required")
        if not self.inputs:
            raise ValueError("`inputs` must map at least one prompt variable to a column")
        return self


class PromptSpec(Strict):
    system: str | None = None
    template: str = Field(description="user message with {variable} slots from data.inputs")
    answer_prefix: str = Field("", description="text the answer follows in a plain (non-chat) prompt")
    few_shot_separator: str = "\n\n"


class PromptOverride(Strict):
    """A candidate's changes to one task's prompt (e.g. a fine-tune that learned the label set needs no list)."""

    system: str | None = None
    template: str | None = None
    answer_prefix: str | None = None

    def apply(self, prompt: PromptSpec) -> PromptSpec:
        return prompt.model_copy(update=self.model_dump(exclude_none=True))


class GenerationSpec(Strict):
    max_new_tokens: Annotated[int, Field(gt=0)] = 64
    temperature: Annotated[float, Field(ge=0)] = 0.0
    stop: list[str] = Field(default_factory=list)


class TaskSpec(Strict):
    name: str
    version: int = 1
    kind: TaskKind
    description: str = ""
    data: DataSpec
    prompt: PromptSpec
    labels: list[str] | str | None = Field(None, description="label list, or a JSON file holding one")
    source: str | None = Field(None, description="input variable holding the grounding passage")
    metrics: list[str]
    generation: GenerationSpec = GenerationSpec()
    licence: str | None = None
    # The YAML file itself: data paths are relative to its folder, errors name it.
    file: Path = Field(Path("task.yaml"), exclude=True)

    @property
    def base_dir(self) -> Path:
        return self.file.parent

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


class DetectorSpec(Strict):
    """How a task's hallucination rate is decided (see harness/detectors)."""

    name: Literal["grounding", "nli", "judge"] = "grounding"
    model: str | None = Field(None, description="nli: an entailment classifier; judge: the judging model "
                              "(embedded name or local directory, or the served model's name with `url`)")
    url: str | None = Field(None, description="judge: base URL of an OpenAI-compatible server")
    api_key_env: str | None = None
    tolerance: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.1, description="grounding: share of the answer's content words that may be unsupported")
    threshold: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.5, description="nli: an answer sentence needs at least this entailment probability")

    @model_validator(mode="after")
    def _needs(self) -> DetectorSpec:
        if self.name in ("nli", "judge") and not self.model:
            raise ValueError(f"detector `{self.name}` needs `model`")
        if self.url and self.name != "judge":
            raise ValueError("`url` is only for the `judge` detector")
        return self


class TaskRef(Strict):
    """A task as a suite uses it: by name or path, optionally cut down for quick runs."""

    task: str
    limit: Annotated[int, Field(gt=0)] | None = None
    sample: Annotated[int, Field(gt=0)] | None = Field(
        None, description="seeded sample of this many test examples, stratified by label"
    )
    detector: DetectorSpec = DetectorSpec()


class ServeSpec(Strict):
    """How the harness starts a vLLM server for a base model (backend `vllm`)."""

    tensor_parallel_size: Annotated[int, Field(ge=1)] = 1
    pipeline_parallel_size: Annotated[int, Field(ge=1)] = 1
    replicas: Annotated[int, Field(ge=1)] = Field(1, description="data-parallel servers; requests round-robin")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    max_model_len: Annotated[int, Field(gt=0)] | None = None
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = 0.9
    max_lora_rank: Annotated[int, Field(gt=0)] = 16
    cpu_kv_cache_gib: Annotated[int, Field(gt=0)] = 2
    startup_timeout_s: Annotated[float, Field(gt=0)] = 600.0
    devices: list[int] = Field(default_factory=list, description="GPU ids, split across replicas in order")
    extra_args: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _devices_fit(self) -> ServeSpec:
        per_server = self.tensor_parallel_size * self.pipeline_parallel_size
        if self.devices and len(self.devices) != per_server * self.replicas:
            raise ValueError(f"`devices` lists {len(self.devices)} GPUs; tensor x pipeline x replicas needs "
                             f"{per_server * self.replicas}")
        return self

    def devices_of(self, replica: int) -> list[int]:
        per_server = self.tensor_parallel_size * self.pipeline_parallel_size
        return self.devices[replica * per_server:(replica + 1) * per_server]


class DistributedSpec(Strict):
    """Training on several GPUs through torchrun (one process per GPU) and transformers' Trainer."""

    processes: Annotated[int, Field(gt=0)] = Field(1, description="processes (GPUs) on this machine")
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp", description="ddp: a full copy of the base per GPU; fsdp: the base sharded across GPUs (70B)")
    fsdp_wrap: str | None = Field(None, description="fsdp: the decoder layer class to wrap, e.g. LlamaDecoderLayer")


class FinetuneSpec(Strict):
    """A LoRA fine-tune of the candidate's model on one task's training split (peft + transformers)."""

    task: str = Field(description="the suite task whose training split is used")
    limit: Annotated[int, Field(gt=0)] | None = Field(None, description="seeded stratified subset of train")
    decontaminate: bool = Field(False, description="drop training rows that also occur in the test split; "
                                "train/test overlap then no longer blocks training")
    validation_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.1
    rank: Annotated[int, Field(gt=0)] = 8
    alpha: Annotated[float, Field(gt=0)] = 16
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.05
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    epochs: Annotated[float, Field(gt=0)] = 1.0
    max_steps: Annotated[int, Field(gt=0)] | None = None
    learning_rate: Annotated[float, Field(gt=0)] = 2e-4
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.03
    batch_size: Annotated[int, Field(gt=0)] = 8
    gradient_accumulation: Annotated[int, Field(gt=0)] = 1
    max_seq_len: Annotated[int, Field(gt=0)] = 512
    eval_steps: Annotated[int, Field(gt=0)] = 20
    early_stopping_patience: Annotated[int, Field(ge=0)] = 3
    gradient_checkpointing: bool = False
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="auto: bfloat16 where the GPU or CPU computes it natively, else float32")
    distributed: DistributedSpec = DistributedSpec()
    seed: int = 0


class Candidate(Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    model: str = Field(description="embedded model name, local directory, hub id, or served model name")
    adapter: str | None = Field(None, description="directory of a peft LoRA adapter")
    backend: Literal["hf", "openai", "vllm"] = "hf"
    url: str | None = Field(None, description="base URL of an OpenAI-compatible server (backend openai)")
    api_key_env: str | None = Field(None, description="environment variable holding the API key")
    endpoint: Literal["chat", "completions"] = "chat"
    few_shot: Annotated[int, Field(ge=0)] = 0
    chat: bool | None = Field(None, description="use the chat template; default: when the model has one")
    batch_size: Annotated[int, Field(gt=0)] = 8
    concurrency: Annotated[int, Field(gt=0)] = 4
    timeout_s: Annotated[float, Field(gt=0)] = 120.0
    max_retries: Annotated[int, Field(ge=0)] = 3
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    cost_per_hour: Annotated[float, Field(ge=0)] = 0.0
    serve: ServeSpec = ServeSpec()
    finetune: FinetuneSpec | None = None
    tasks: list[str] | None = Field(None, description="score this candidate on these suite tasks only (default: all)")
    prompts: dict[str, PromptOverride] = Field(default_factory=dict, description="prompt changes per task name")

    def runs(self, task: str) -> bool:
        return self.tasks is None or task in self.tasks

    @model_validator(mode="after")
    def _backend_needs(self) -> Candidate:
        if self.backend == "openai" and not self.url:
            raise ValueError("backend `openai` needs `url`")
        if self.backend != "openai" and self.url:
            raise ValueError("`url` is only for backend `openai`")
        # Compared with the defaults (not "was it written") so that a run.json snapshot validates again.
        if self.finetune is not None and self.adapter:
            raise ValueError("give either `adapter` or `finetune`, not both")
        if self.backend != "vllm" and self.serve != ServeSpec():
            raise ValueError("`serve` is only for backend `vllm`")
        return self


class BootstrapSpec(Strict):
    resamples: Annotated[int, Field(ge=100)] = 1000
    confidence: Annotated[float, Field(gt=0.5, lt=1)] = 0.95


class Criterion(Strict):
    task: str
    metric: str
    candidate: str
    at_least: float | None = None
    at_most: float | None = None
    better_than: str | None = None
    by: Annotated[float, Field(ge=0)] | None = None
    not_worse_than: str | None = None
    margin: Annotated[float, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _one_rule(self) -> Criterion:
        rules = [r for r in ("at_least", "at_most", "better_than", "not_worse_than") if getattr(self, r) is not None]
        if len(rules) != 1:
            raise ValueError("give exactly one of at_least, at_most, better_than, not_worse_than"
                             + (f" (got {' and '.join(rules)})" if rules else ""))
        if self.by is not None and self.better_than is None:
            raise ValueError("`by` goes with `better_than`")
        if self.margin is not None and self.not_worse_than is None:
            raise ValueError("`margin` goes with `not_worse_than`")
        return self

    @property
    def baseline(self) -> str | None:
        return self.better_than or self.not_worse_than

    def describe(self) -> str:
        if self.at_least is not None:
            rule = f">= {self.at_least:g}"
        elif self.at_most is not None:
            rule = f"<= {self.at_most:g}"
        elif self.better_than is not None:
            rule = f"better than {self.better_than} by {self.by or 0:g}"
        else:
            rule = f"not worse than {self.not_worse_than} by more than {self.margin or 0:g}"
        return f"{self.task} {self.metric} of {self.candidate} {rule}"


class Manifest(Strict):
    min_examples: Annotated[int, Field(ge=1)] = 1
    confidence: Annotated[float, Field(gt=0.5, lt=1)] = 0.95
    holm: bool = Field(False, description="Holm-correct the passing decisions across all criteria")
    criteria: list[Criterion]

    @model_validator(mode="after")
    def _not_empty(self) -> Manifest:
        if not self.criteria:
            raise ValueError("a manifest needs at least one criterion")
        return self


class Suite(Strict):
    name: str
    description: str = ""
    seed: int = 0
    tasks: list[TaskRef]
    candidates: list[Candidate]
    bootstrap: BootstrapSpec = BootstrapSpec()
    allow_overlap: bool = Field(False, description="let test examples that also occur in train pass the data check")
    manifest: Manifest | str | None = Field(None, description="success criteria, inline or a YAML file")

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


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(path, None, "file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else None
        raise ConfigError(path, where, f"malformed YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise ConfigError(path, None, "expected a mapping at the top level")
    return data


def _validate(model: type[BaseModel], data: dict[str, Any], path: Path | str, **extra: Any) -> Any:
    try:
        return model.model_validate({**data, **extra})
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or None
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(path, field, msg) from None


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
            return _validate(TaskSpec, _read_yaml(path), path, file=path)
    raise ConfigError(relative_to or ".", "tasks", f"unknown task {ref!r} (not a file, nor in {TASKS_DIR})")


def load_suite(path: str | Path) -> Suite:
    path = Path(path)
    return _validate(Suite, _read_yaml(path), path)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
