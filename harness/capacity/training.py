"""What a LoRA fine-tune needs on each GPU it trains on (a `finetune:` block): the frozen base, the LoRA weights
with their gradients and Adam's two moments, and the activations of one batch. Plain arithmetic on the shape and
the block's settings; FORMULAS says how each figure is made."""

from __future__ import annotations

from dataclasses import dataclass

from harness.capacity.memory import GIB, OVERHEAD_GIB
from harness.capacity.shapes import ModelShape
from harness.finetune_spec import FinetuneSpec

# Bytes of saved activations per token, hidden unit and layer for 16-bit training with fused attention
# (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models": 34·s·b·h per layer).
ACTIVATION_BYTES = 34
# With gradient checkpointing each layer keeps only its input (2 bytes per value), and one layer's full
# activations exist at a time while it is recomputed.
CHECKPOINT_BYTES = 2

FORMULAS = {
    "base": "parameters × dtype bytes, / processes under FSDP (+ 2 gathered layers), whole under DDP",
    "lora": "rank × (in + out) per targeted layer × trained layers × 4 bytes (peft keeps LoRA in float32)",
    "gradients": "trainable parameters × 4 bytes",
    "optimizer": "Adam: 2 × trainable parameters × 4 bytes; LoRA weights, gradients and Adam / processes under FSDP",
    "activations": f"batch × max_seq_len × hidden × layers × {ACTIVATION_BYTES} bytes "
                   f"(gradient checkpointing: × {CHECKPOINT_BYTES} bytes per layer + one layer × {ACTIVATION_BYTES})"
                   " × dtype bytes / 2",
    "logits": "2 × batch × max_seq_len × vocab × 4 bytes (float32 logits for the loss and their gradient)",
    "overhead": f"{OVERHEAD_GIB} GiB: CUDA context, NCCL",
}


@dataclass(frozen=True)
class FinetuneMemory:
    """One training process's GPU memory, in bytes."""

    processes: int
    strategy: str
    trainable: int  # LoRA parameters
    untargeted: tuple[str, ...]  # target_modules the planner does not know (counted as nothing)
    base: float
    lora: float
    gradients: float
    optimizer: float
    activations: float
    logits: float
    overhead: float

    @property
    def total(self) -> float:
        return (self.base + self.lora + self.gradients + self.optimizer + self.activations + self.logits
                + self.overhead)


def trainable_parameters(shape: ModelShape, spec: FinetuneSpec) -> tuple[int, tuple[str, ...]]:
    """LoRA parameters for the block's targets and layers, and the targets the shape has no layer for."""
    linear = shape.linear()
    layers = min(spec.last_layers or shape.layers, shape.layers)
    known = [m for m in spec.target_modules if m in linear]
    per_layer = sum(spec.rank * sum(linear[m]) for m in known)
    return per_layer * layers, tuple(m for m in spec.target_modules if m not in linear)


def finetune_memory(shape: ModelShape, spec: FinetuneSpec) -> FinetuneMemory:
    nbytes = 4 if spec.precision == "float32" else 2  # `auto` trains in bfloat16 on the GPUs planned for
    d = spec.distributed
    shards = d.processes if d.strategy == "fsdp" else 1
    trainable, unknown = trainable_parameters(shape, spec)
    layer = sum(i * o for i, o in shape.linear().values()) * nbytes
    base = shape.parameters * nbytes / shards + (2 * layer if shards > 1 else 0)
    tokens = spec.batch_size * spec.max_seq_len * shape.hidden_size
    if spec.gradient_checkpointing:
        activations = tokens * (shape.layers * CHECKPOINT_BYTES + ACTIVATION_BYTES)
    else:
        activations = tokens * shape.layers * ACTIVATION_BYTES
    return FinetuneMemory(
        processes=d.processes, strategy=d.strategy if d.processes > 1 else "single", trainable=trainable,
        untargeted=unknown, base=base, lora=trainable * 4 / shards, gradients=trainable * 4 / shards,
        optimizer=2 * trainable * 4 / shards, activations=activations * nbytes / 2,
        logits=2 * spec.batch_size * spec.max_seq_len * shape.vocab_size * 4, overhead=OVERHEAD_GIB * GIB)
