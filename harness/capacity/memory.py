"""What one vLLM server needs on each of its GPUs, budgeted as vLLM budgets it: the weights, LoRA slots and a
profiling pass come out of `gpu_memory_utilization` × the GPU's memory, and the KV cache gets what is left. Plain
arithmetic on a model's shape, so the figures can be checked by hand (FORMULAS says how each is made)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.capacity.shapes import LINEAR_MODULES, ModelShape
from harness.capacity.topology import Server

GIB = 2**30
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# Per GPU, outside PyTorch's tensors: the CUDA context, NCCL buffers and the CUDA graph pool.
OVERHEAD_GIB = 1.5
# vLLM's profiling forward pass: a full batch of tokens (max_num_batched_tokens) and the sampler's logits for
# its largest batch of sequences (max_num_seqs), the peak its KV budget is taken after.
PROFILE_TOKENS = 8192
PROFILE_SEQUENCES = 256

FORMULAS = {
    "weights": "parameters × dtype bytes / (tensor × pipeline parallel)",
    "lora": "max_loras × max_lora_rank × Σ(in + out) of the 7 linear layers × layers × dtype bytes / tensor parallel "
            "(vLLM reserves every LoRA-capable layer, whatever the adapter targets)",
    "activations": f"{PROFILE_TOKENS} tokens × (2 × hidden + 2 × intermediate / tensor parallel) × dtype bytes + "
                   f"{PROFILE_SEQUENCES} sequences × vocab × 4 bytes (vLLM's profiling pass)",
    "overhead": f"{OVERHEAD_GIB} GiB: CUDA context, NCCL, CUDA graphs",
    "kv_per_token": "2 × layers / pipeline × max(kv_heads / tensor parallel, 1) × head_dim × dtype bytes "
                    "(KV heads split across tensor-parallel ranks, replicated where there are fewer)",
    "budget": "GPU memory × gpu_memory_utilization",
}


def dtype_bytes(dtype: str) -> int:
    """Bytes per value; `auto` is 16-bit on GPUs (vLLM serves bfloat16 weights as bfloat16, float32 and float16
    ones as float16)."""
    return DTYPE_BYTES.get(dtype, 2)


@dataclass(frozen=True)
class ServingMemory:
    """One GPU's share of one server, in bytes."""

    weights: float
    lora: float
    activations: float
    overhead: float
    kv_per_token: float
    max_model_len: int
    sequences: int  # concurrent sequences the suite sends one replica
    budget: float

    @property
    def fixed(self) -> float:
        return self.weights + self.lora + self.activations + self.overhead

    @property
    def kv_room(self) -> float:
        return self.budget - self.fixed

    @property
    def kv_needed(self) -> float:
        """KV cache for every concurrent sequence at max_model_len: the worst case the suite can send."""
        return self.kv_per_token * self.max_model_len * self.sequences

    @property
    def full_length_sequences(self) -> int:
        """How many sequences of max_model_len the KV cache holds at once (vLLM refuses to start below one)."""
        return max(math.floor(self.kv_room / (self.kv_per_token * self.max_model_len)), 0)


def kv_per_token(shape: ModelShape, tensor: int, pipeline: int, nbytes: int) -> float:
    return 2 * math.ceil(shape.layers / pipeline) * max(shape.kv_heads // tensor, 1) * shape.head_dim * nbytes


def lora_bytes(shape: ModelShape, rank: int, loras: int, tensor: int, nbytes: int) -> float:
    linear = shape.linear()
    per_layer = sum(sum(linear[m]) for m in LINEAR_MODULES)
    return loras * rank * per_layer * shape.layers * nbytes / tensor


def serving_memory(shape: ModelShape, *, tensor: int, pipeline: int, nbytes: int, max_model_len: int,
                   sequences: int, loras: int, max_lora_rank: int, budget_gib: float) -> ServingMemory:
    activations = (PROFILE_TOKENS * (2 * shape.hidden_size + 2 * shape.intermediate_size / tensor) * nbytes
                   + PROFILE_SEQUENCES * shape.vocab_size * 4)
    return ServingMemory(
        weights=shape.parameters * nbytes / (tensor * pipeline),
        lora=lora_bytes(shape, max_lora_rank, loras, tensor, nbytes) if loras else 0.0,
        activations=activations, overhead=OVERHEAD_GIB * GIB,
        kv_per_token=kv_per_token(shape, tensor, pipeline, nbytes), max_model_len=max_model_len,
        sequences=sequences, budget=budget_gib * GIB)


def of_server(server: Server, shape: ModelShape, memory_gib: float) -> ServingMemory:
    """A server's share of each of its GPUs; without `max_model_len`, vLLM takes the model's maximum."""
    serve = server.serve
    return serving_memory(
        shape, tensor=serve.tensor_parallel_size, pipeline=serve.pipeline_parallel_size,
        nbytes=dtype_bytes(serve.dtype), max_model_len=serve.max_model_len or shape.max_positions,
        sequences=server.sequences, loras=len(server.adapters), max_lora_rank=serve.max_lora_rank,
        budget_gib=memory_gib * serve.gpu_memory_utilization)
