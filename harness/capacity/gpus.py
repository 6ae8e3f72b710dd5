"""The devices a plan is sized for: common data-centre GPUs, one given by its memory alone, or the GPU this machine
has (what `harness run` checks a layout against)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from harness.errors import HarnessError


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_gib: float  # as nvidia-smi reports it, which is what vLLM's gpu_memory_utilization is a share of
    bandwidth_gb_s: float | None = None  # peak memory bandwidth: decode speed follows it
    bf16_tflops: float | None = None  # peak dense bfloat16: prefill and training speed follow it


# NVIDIA's datasheets (SXM parts where there are two); memory as nvidia-smi reports it (H100 80 GB: 81559 MiB).
GPUS: dict[str, Gpu] = {g.name: g for g in (
    Gpu("h100", 79.6, 3350, 989),
    Gpu("h200", 140.4, 4800, 989),
    Gpu("a100-80gb", 80.0, 2039, 312),
    Gpu("a100-40gb", 40.0, 1555, 312),
    Gpu("l40s", 45.0, 864, 362),
    Gpu("l4", 22.5, 300, 121),
)}


def gpu_named(name: str, memory_gib: float | None = None) -> Gpu:
    """A GPU of the table, its memory replaced where one is given (a 94 GB H100 NVL, a MIG slice)."""
    gpu = GPUS.get(name.lower())
    if gpu is None:
        raise HarnessError(f"--gpu: unknown GPU {name!r}; known: {', '.join(GPUS)} (with --gpu-memory GiB for "
                           "another size)")
    if memory_gib is None:
        return gpu
    if memory_gib <= 0:
        raise HarnessError(f"--gpu-memory: {memory_gib:g} GiB; give a positive size")
    return replace(gpu, name=f"{gpu.name} ({memory_gib:g} GiB)", memory_gib=memory_gib)


def local_gpu() -> Gpu | None:
    """This machine's first GPU, None without CUDA (imports torch: called only when a suite starts vLLM servers)."""
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return Gpu(props.name, props.total_memory / 2**30)
