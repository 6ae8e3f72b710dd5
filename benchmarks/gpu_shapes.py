"""What a GPU alone can show before a suite rents a node: for models shaped like the bases teams fine-tune (Llama 3.2
1B and Llama 3.1 8B, random weights: no download, no licence), the LoRA training step time, peak memory and training
tokens/s at the fine-tune's settings (rank 16 on the attention projections, AdamW, bfloat16), and in-process
generation speed (transformers' generate, greedy, a batch of prompts).

The figures check `harness plan`'s estimates (capacity/estimate.py assumes 40% of peak FLOPs); the README quotes them
where they were measured, and says they are unmeasured where not. Without a GPU the script measures the same things
for a SmolLM2-135M shape on the CPU, to gpu_shapes-cpu.json (the script works; no GPU figure comes from it).

Run: python benchmarks/gpu_shapes.py [--shapes 1b,8b] [--steps 10] [--seq-len 1024] [--batch 4]
Writes benchmarks/results/gpu_shapes.json (gpu_shapes-cpu.json on a CPU); exits 1 when a shape failed to run.
"""

from __future__ import annotations

import argparse
import resource
import time
from dataclasses import asdict, dataclass
from statistics import median
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from record import spread, write

# The public configs' shapes (config.json of each hub model); vocabularies as published.
SHAPES: dict[str, dict[str, Any]] = {
    "135m": {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
             "num_key_value_heads": 3, "vocab_size": 49152, "tie_word_embeddings": True},
    "1b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
           "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": True},
    "8b": {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
           "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": False},
}


@dataclass
class ShapeFigures:
    shape: str
    parameters: int
    lora_parameters: int
    step_s: dict[str, Any]
    train_tokens_per_s: float
    peak_memory_gib: float
    generate_tokens_per_s: float
    generate_batch: int
    generate_new_tokens: int


def build(shape: str, device: torch.device, dtype: torch.dtype) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**SHAPES[shape], max_position_embeddings=8192, torch_dtype=dtype)
    torch.manual_seed(0)
    with device:
        return LlamaForCausalLM(config).to(dtype)


def lora_steps(model: Any, batch: int, seq_len: int, steps: int, device: torch.device) -> tuple[list[float], int]:
    """Seconds per optimizer step (after two warm-up steps) of a rank-16 LoRA on random tokens, and its trainable
    parameter count."""
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj",
                                                                                          "o_proj"]))
    if seq_len * batch > 8192:  # as the suite's fine-tune does at these lengths
        peft_model.gradient_checkpointing_enable()
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=2e-4)
    tokens = torch.randint(0, model.config.vocab_size, (batch, seq_len), device=device)
    times = []
    for step in range(steps + 2):
        start = time.perf_counter()
        loss = peft_model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= 2:
            times.append(time.perf_counter() - start)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    peft_model.unload()
    return times, trainable


def generation_speed(model: Any, batch: int, prompt_len: int, new_tokens: int, device: torch.device) -> float:
    """New tokens per second of greedy generation for a batch of random prompts (every sequence runs to the end)."""
    prompts = torch.randint(0, model.config.vocab_size, (batch, prompt_len), device=device)
    given = {"attention_mask": torch.ones_like(prompts), "pad_token_id": 0, "do_sample": False}
    model.eval()
    with torch.no_grad():
        model.generate(prompts, max_new_tokens=4, min_new_tokens=4, **given)  # warm-up
        start = time.perf_counter()
        model.generate(prompts, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **given)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return batch * new_tokens / (time.perf_counter() - start)


def measure(shape: str, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> ShapeFigures:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model = build(shape, device, dtype)
    parameters = sum(p.numel() for p in model.parameters())
    times, trainable = lora_steps(model, args.batch, args.seq_len, args.steps, device)
    # On a GPU what torch allocated at most; on a CPU the process's peak resident memory (the closest it has).
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**30
    tokens_per_s = generation_speed(model, args.gen_batch, args.prompt_len, args.new_tokens, device)
    del model
    return ShapeFigures(shape, parameters, trainable, spread(times), args.batch * args.seq_len / median(times),
                        peak, tokens_per_s, args.gen_batch, args.new_tokens)


def main() -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="1b,8b" if cuda else "135m")
    parser.add_argument("--steps", type=int, default=10 if cuda else 3)
    parser.add_argument("--batch", type=int, default=4 if cuda else 1)
    parser.add_argument("--seq-len", type=int, default=1024 if cuda else 128)
    parser.add_argument("--gen-batch", type=int, default=32 if cuda else 4)
    parser.add_argument("--prompt-len", type=int, default=512 if cuda else 64)
    parser.add_argument("--new-tokens", type=int, default=128 if cuda else 16)
    args = parser.parse_args()
    device = torch.device("cuda" if cuda else "cpu")
    from harness.models import native_dtype

    dtype = torch.bfloat16 if cuda or native_dtype() == "bfloat16" else torch.float32
    figures, failed = {}, {}
    for shape in args.shapes.split(","):
        try:
            figures[shape] = asdict(measure(shape, args, device, dtype))
        except (RuntimeError, torch.OutOfMemoryError) as exc:  # out of memory, a kernel missing: said, recorded
            failed[shape] = str(exc).splitlines()[0]
    table = Table(title=f"LoRA step and generation on {torch.cuda.get_device_name(0) if cuda else 'this CPU'}")
    for col in ("shape", "params", "step s (median)", "train tok/s", "peak GiB", "generate tok/s"):
        table.add_column(col, justify="left" if col == "shape" else "right")
    for shape, f in figures.items():
        table.add_row(shape, f"{f['parameters'] / 1e9:.2f}B", f"{f['step_s']['median']:.3f}",
                      f"{f['train_tokens_per_s']:.0f}", f"{f['peak_memory_gib']:.1f}",
                      f"{f['generate_tokens_per_s']:.0f}")
    Console().print(table)
    write("gpu_shapes" if cuda else "gpu_shapes-cpu", goal="every shape trains a LoRA step and generates",
          met=not failed, figures={"shapes": figures, "failed": failed},
          settings={**vars(args), "device": str(device), "dtype": str(dtype).removeprefix("torch.")})


if __name__ == "__main__":
    main()
