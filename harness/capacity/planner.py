"""A suite's capacity plan: each server's model, adapters, GPUs and memory per GPU, each fine-tune's memory per
process, the requests and an estimate of time and cost; or the one line that says why the layout cannot run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harness.backends.vllm_server import VllmOptions
from harness.capacity.checks import adapter_problems, layout_problems
from harness.capacity.estimate import (
    GenerationEstimate,
    TaskDemand,
    TrainingDemand,
    TrainingEstimate,
    generation_estimate,
    training_estimate,
    unestimated,
)
from harness.capacity.gpus import Gpu
from harness.capacity.memory import GIB, ServingMemory, of_server
from harness.capacity.shapes import FoundShape, shape_of
from harness.capacity.topology import Elsewhere, Server, elsewhere_of, servers_of
from harness.capacity.training import FinetuneMemory, finetune_memory
from harness.config import Suite
from harness.errors import ConfigError, HarnessError
from harness.finetune_spec import FinetuneSpec


@dataclass(frozen=True)
class ServerPlan:
    server: Server
    shape: FoundShape
    memory: ServingMemory  # per GPU


@dataclass(frozen=True)
class FinetunePlan:
    candidate: str
    model: str
    spec: FinetuneSpec
    memory: FinetuneMemory  # per process
    estimate: TrainingEstimate


@dataclass
class CapacityPlan:
    suite: str
    gpu: Gpu
    servers: list[ServerPlan]
    elsewhere: list[Elsewhere]
    finetunes: list[FinetunePlan]
    generation: list[GenerationEstimate]
    notes: list[str] = field(default_factory=list)


def suite_shapes(suite: Suite, suite_file: Path) -> dict[str, FoundShape]:
    """The shape of every model the harness loads (served or fine-tuned here), or the line saying how to give one."""
    shapes: dict[str, FoundShape] = {}
    for i, cand in enumerate(suite.candidates):
        if not (cand.options.local_weights or cand.finetune) or cand.model in shapes:
            continue
        try:
            found = shape_of(cand.model)
        except HarnessError as exc:
            raise ConfigError(suite_file, f"candidates.{i}.model", str(exc)) from None
        if found is None:
            raise ConfigError(suite_file, f"candidates.{i}.model", (
                f"no shape known for {cand.model!r}: not a local folder with a config.json, not in the Hugging Face "
                "cache, not in the shipped table (harness/capacity/shapes.json); give a local path, or fetch its "
                f"config alone: `huggingface-cli download {cand.model} config.json`"))
        shapes[cand.model] = found
    return shapes


def plan_capacity(suite: Suite, suite_file: Path, gpu: Gpu, demands: list[TaskDemand],
                  training: list[TrainingDemand]) -> CapacityPlan:
    """The plan, after every check of checks.py (the first problem raised as a ConfigError naming its field)."""
    shapes = suite_shapes(suite, suite_file)
    for where, message in [*adapter_problems(suite),
                           *layout_problems(suite, gpu, lambda m: shapes[m].shape if m in shapes else None)]:
        raise ConfigError(suite_file, where, message)
    plans = [ServerPlan(s, shapes[s.model], of_server(s, shapes[s.model].shape, gpu.memory_gib))
             for s in servers_of(suite)]
    estimates = []
    for plan in plans:
        s = plan.server
        for name in s.candidates:
            cand = suite.candidate(name)
            mine = [d for d in demands if d.candidate == name]
            concurrency = cand.options.concurrency if isinstance(cand.options, VllmOptions) else s.concurrency
            estimates.append(generation_estimate(
                name, mine, plan.memory, plan.shape.shape,
                (s.serve.tensor_parallel_size, s.serve.pipeline_parallel_size, s.serve.replicas), concurrency, gpu,
                cand.cost_per_hour))
    estimates += [unestimated(e.candidate, [d for d in demands if d.candidate == e.candidate])
                  for e in elsewhere_of(suite)]
    finetunes = []
    for demand in training:
        cand = suite.candidate(demand.candidate)
        assert cand.finetune is not None
        shape = shapes[cand.model].shape
        finetunes.append(FinetunePlan(cand.name, cand.model, cand.finetune, finetune_memory(shape, cand.finetune),
                                      training_estimate(demand, cand.finetune, shape, gpu)))
    return CapacityPlan(suite.name, gpu, plans, elsewhere_of(suite), finetunes, estimates,
                        _notes(plans, finetunes, gpu))


def _notes(servers: list[ServerPlan], finetunes: list[FinetunePlan], gpu: Gpu) -> list[str]:
    """What the user should know that does not stop the run."""
    notes = []
    for plan in servers:
        s, mem = plan.server, plan.memory
        if not s.serve.max_model_len:
            notes.append(f"candidates.{s.index}.serve.max_model_len is not set: vLLM takes the model's "
                         f"{mem.max_model_len} tokens")
        if mem.kv_needed > mem.kv_room:
            notes.append(f"candidates.{s.index}: the KV cache holds {mem.full_length_sequences} sequences of "
                         f"{mem.max_model_len} tokens per replica and the suite sends up to {s.sequences}; shorter "
                         "prompts share it, longer ones wait their turn")
    for ft in finetunes:
        if ft.memory.total > gpu.memory_gib * GIB:
            notes.append(f"{ft.candidate}: the fine-tune needs about {ft.memory.total / GIB:.0f} GiB per process, "
                         f"more than the {gpu.name}'s {gpu.memory_gib:g} GiB: lower batch_size or max_seq_len, turn "
                         "on gradient_checkpointing, or shard the base with strategy: fsdp")
        if ft.memory.untargeted:
            notes.append(f"{ft.candidate}: target_modules {', '.join(ft.memory.untargeted)} are not layers the "
                         "planner knows; they are counted as nothing")
    return notes
