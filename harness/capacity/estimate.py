"""How long generation and training will take, and what generation costs: roofline estimates from a GPU's peak
figures at stated efficiencies. They are assumptions, not measurements (ASSUMPTIONS says which), printed as such."""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.capacity.gpus import Gpu
from harness.capacity.memory import ServingMemory
from harness.capacity.shapes import ModelShape
from harness.finetune_spec import FinetuneSpec

DECODE_EFFICIENCY = 0.6  # share of peak memory bandwidth a decoding step reaches
COMPUTE_EFFICIENCY = 0.4  # share of peak bfloat16 FLOPs prefill and training reach
CHARS_PER_TOKEN = 4.0

ASSUMPTIONS = {
    "tokens": f"a token per {CHARS_PER_TOKEN:g} characters of prompt; every answer runs to its task's max_new_tokens "
              "(an upper bound)",
    "decode": f"each step reads the replica's weights and its sequences' KV cache at {DECODE_EFFICIENCY:.0%} of the "
              "GPU's peak memory bandwidth",
    "prefill": f"2 × parameters FLOPs per prompt token at {COMPUTE_EFFICIENCY:.0%} of peak bfloat16 FLOPs",
    "training": f"4 × parameters FLOPs per token (6 × with gradient checkpointing) at {COMPUTE_EFFICIENCY:.0%} of "
                "peak bfloat16 FLOPs on every process; validation passes not counted",
    "cost": "estimated generation time × the candidate's cost_per_hour (server start-up not counted)",
}


@dataclass(frozen=True)
class TaskDemand:
    """What one candidate asks on one task, from the suite's data and prompts."""

    candidate: str
    task: str
    requests: int
    prompt_chars: int  # every request's prompt together
    max_new_tokens: int


@dataclass(frozen=True)
class TrainingDemand:
    candidate: str
    examples: int  # training rows after the limit and the validation split
    chars_per_example: float  # prompt and answer


@dataclass(frozen=True)
class GenerationEstimate:
    candidate: str
    requests: int
    prompt_tokens: int
    output_tokens: int  # at most
    seconds: float | None  # None: the GPU's speed is not known
    cost: float | None


@dataclass(frozen=True)
class TrainingEstimate:
    candidate: str
    examples: int
    tokens: int
    seconds: float | None


def generation_estimate(candidate: str, demands: list[TaskDemand], memory: ServingMemory, shape: ModelShape,
                        parallel: tuple[int, int, int], concurrency: int, gpu: Gpu,
                        cost_per_hour: float) -> GenerationEstimate:
    """`parallel`: tensor, pipeline, replicas. Requests go round-robin over the replicas, `concurrency` in flight."""
    tensor, pipeline, replicas = parallel
    prompt_tokens = sum(d.prompt_chars for d in demands) / CHARS_PER_TOKEN
    seconds: float | None = None
    if gpu.bandwidth_gb_s and gpu.bf16_tflops:
        in_flight = max(math.ceil(concurrency / replicas), 1)
        seconds = 0.0
        for d in demands:
            per_replica = math.ceil(d.requests / replicas)
            context = d.prompt_chars / max(d.requests, 1) / CHARS_PER_TOKEN + d.max_new_tokens / 2
            read = memory.weights + memory.lora + min(in_flight, per_replica) * context * memory.kv_per_token
            step_s = pipeline * read / (gpu.bandwidth_gb_s * 1e9 * DECODE_EFFICIENCY)
            decode_s = math.ceil(per_replica / in_flight) * d.max_new_tokens * step_s
            prefill_flops = d.prompt_chars / CHARS_PER_TOKEN / replicas * 2 * shape.parameters
            prefill_s = prefill_flops / (tensor * pipeline * gpu.bf16_tflops * 1e12 * COMPUTE_EFFICIENCY)
            seconds += decode_s + prefill_s
    return GenerationEstimate(candidate, sum(d.requests for d in demands), round(prompt_tokens),
                              sum(d.requests * d.max_new_tokens for d in demands), seconds,
                              None if seconds is None else seconds / 3600 * cost_per_hour)


def unestimated(candidate: str, demands: list[TaskDemand]) -> GenerationEstimate:
    """A candidate on no server the harness starts (in process, or someone else's server): its work, no time."""
    return GenerationEstimate(candidate, sum(d.requests for d in demands),
                              round(sum(d.prompt_chars for d in demands) / CHARS_PER_TOKEN),
                              sum(d.requests * d.max_new_tokens for d in demands), None, None)


def training_estimate(demand: TrainingDemand, spec: FinetuneSpec, shape: ModelShape, gpu: Gpu) -> TrainingEstimate:
    per_example = min(demand.chars_per_example / CHARS_PER_TOKEN, spec.max_seq_len)
    sequences = demand.examples * spec.epochs
    if spec.max_steps is not None:
        sequences = spec.max_steps * spec.batch_size * spec.gradient_accumulation * spec.distributed.processes
    tokens = round(sequences * per_example)
    seconds = None
    if gpu.bf16_tflops:
        flops = tokens * (6 if spec.gradient_checkpointing else 4) * shape.parameters
        seconds = flops / (spec.distributed.processes * gpu.bf16_tflops * 1e12 * COMPUTE_EFFICIENCY)
    return TrainingEstimate(demand.candidate, demand.examples, tokens, seconds)
