"""Layouts that cannot run, found before any work: each is (field, message), the field as the user wrote it. The
same checks run in `harness plan` (for the GPU planned for) and in `harness run` (for this machine's GPU; on a
machine without one only the shape checks, so suites made for a CPU run as before)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from harness import models
from harness.capacity.gpus import Gpu
from harness.capacity.memory import GIB, of_server
from harness.capacity.shapes import ModelShape
from harness.capacity.topology import Server, servers_of
from harness.config import Suite

Problem = tuple[str, str]


def layout_problems(suite: Suite, gpu: Gpu | None, shape: Callable[[str], ModelShape | None]) -> Iterator[Problem]:
    """What stops the suite's vLLM servers: tensor parallelism the heads do not split into, and (on a GPU)
    replicas or servers piled on one GPU beyond its memory, weights and KV cache that do not fit."""
    claims: dict[int, list[Server]] = {}
    for server in servers_of(suite):
        found = shape(server.model) if server.per_replica > 1 or gpu is not None else None
        if found is not None:
            yield from _split_problems(server, found)
        if gpu is None:
            continue
        yield from _placement_problems(server, claims)
        if found is not None:
            yield from _fit_problems(server, found, gpu)


def _split_problems(server: Server, shape: ModelShape) -> Iterator[Problem]:
    tp = server.serve.tensor_parallel_size
    field = f"{server.field}.tensor_parallel_size"
    fits = [n for n in range(1, shape.attention_heads + 1) if shape.attention_heads % n == 0 and
            (shape.kv_heads % n == 0 if shape.kv_heads >= n else n % shape.kv_heads == 0)]
    if shape.attention_heads % tp:
        yield field, (f"{tp} does not divide {server.model}'s {shape.attention_heads} attention heads "
                      f"(sizes that do: {', '.join(map(str, fits))})")
    elif shape.kv_heads >= tp and shape.kv_heads % tp:
        yield field, (f"{tp} does not divide {server.model}'s {shape.kv_heads} KV heads "
                      f"(sizes that do: {', '.join(map(str, fits))})")
    elif shape.kv_heads < tp and tp % shape.kv_heads:
        yield field, (f"{server.model}'s {shape.kv_heads} KV heads cannot be copied evenly over {tp} GPUs "
                      f"(sizes that work: {', '.join(map(str, fits))})")


def _gpus(devices: tuple[int, ...]) -> str:
    return f"GPU {devices[0]}" if len(devices) == 1 else f"GPUs {devices[0]}-{devices[-1]}"


def _placement_problems(server: Server, claims: dict[int, list[Server]]) -> Iterator[Problem]:
    share = server.serve.gpu_memory_utilization
    replicas = server.serve.replicas
    if server.implicit and replicas > 1:
        yield f"{server.field}.replicas", (
            f"{replicas} replicas with no `devices` all start on {_gpus(server.devices()[0])}, each asking for "
            f"{share:.0%} of its memory; list {replicas * server.per_replica} GPUs in `devices`")
        return
    twice = sorted({d for d in server.serve.devices if server.serve.devices.count(d) > 1})
    if twice:
        yield f"{server.field}.devices", (f"GPU {twice[0]} is listed twice; each replica and tensor-parallel rank "
                                          "needs a GPU of its own")
        return
    for device in sorted({d for replica in server.devices() for d in replica}):
        for other in claims.get(device, []):
            asked = other.serve.gpu_memory_utilization + share
            if asked > 1 + 1e-9:
                how = "lists no `devices`, so it starts on" if server.implicit else "lists"
                yield f"{server.field}.devices", (
                    f"{server.candidates[0]}'s server {how} GPU {device}, which candidates.{other.index}'s "
                    f"({other.candidates[0]}) uses too; together they ask for {other.serve.gpu_memory_utilization:.0%}"
                    f" + {share:.0%} of its memory; give each server GPUs of its own, or gpu_memory_utilization "
                    "that add up to at most 100%")
                return
        claims.setdefault(device, []).append(server)


def _fit_problems(server: Server, shape: ModelShape, gpu: Gpu) -> Iterator[Problem]:
    mem = of_server(server, shape, gpu.memory_gib)
    serve = server.serve
    budget = (f"{mem.budget / GIB:.1f} GiB ({serve.gpu_memory_utilization:.0%} of the {gpu.name}'s "
              f"{gpu.memory_gib:g} GiB)")
    if mem.fixed > mem.budget:
        yield f"{server.field}.tensor_parallel_size", (
            f"{server.model} needs {mem.weights / GIB:.1f} GiB of weights per GPU at tensor x pipeline parallel "
            f"{serve.tensor_parallel_size} x {serve.pipeline_parallel_size}, {mem.fixed / GIB:.1f} GiB with LoRA "
            f"slots, activations and overhead, over the {budget} vLLM may use; spread it over more GPUs")
    elif mem.full_length_sequences < 1:
        yield f"{server.field}.max_model_len", (
            f"one sequence of {mem.max_model_len} tokens needs {mem.kv_per_token * mem.max_model_len / GIB:.1f} GiB "
            f"of KV cache per GPU, and {max(mem.kv_room, 0) / GIB:.1f} GiB of the {budget} is left after the weights; "
            "vLLM would refuse to start: lower max_model_len or raise tensor_parallel_size")


def adapter_problems(suite: Suite) -> Iterator[Problem]:
    """An `adapter:` folder (or a fine-tune's parent folder) that is not there: nothing in the suite trains it."""
    names = {c.name for c in suite.candidates}
    for i, cand in enumerate(suite.candidates):
        problem = models.check_adapter_dir(cand.adapter) if cand.adapter else None
        if problem:
            yield f"candidates.{i}.adapter", (
                f"{problem}; no candidate of this suite trains it: train it first (`harness finetune`), or give "
                "this candidate a `finetune:` block instead so that the run trains it")
        parent = cand.finetune.parent if cand.finetune else None
        if parent is not None and parent not in names and not Path(parent).expanduser().is_dir():
            yield f"candidates.{i}.finetune.parent", (
                f"no adapter folder {parent} and no candidate of that name in this suite to continue")
