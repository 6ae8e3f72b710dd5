"""A capacity plan as people read it (rich tables, each figure's formula beside them) and as machines read it
(one JSON document with the same figures, in bytes and seconds)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from rich.table import Table

from harness.capacity import estimate, memory, training
from harness.capacity.memory import GIB
from harness.capacity.planner import CapacityPlan, FinetunePlan, ServerPlan


def _gib(value: float) -> str:
    return f"{value / GIB:.1f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def _gpus(plan: ServerPlan) -> str:
    replicas = plan.server.devices()
    shown = " | ".join(",".join(map(str, r)) for r in replicas)
    return shown + (" (no `devices`)" if plan.server.implicit else "")


def topology_table(plan: CapacityPlan) -> Table:
    table = Table(title=f"Servers of {plan.suite} (one per base model and serve block; TP×PP×DP: tensor, pipeline, "
                  "data parallel)", title_justify="left")
    for col in ("server", "model", "serves", "GPUs per replica", "TP×PP×DP", "parameters", "weights per replica",
                "max_model_len", "shape from"):
        table.add_column(col, justify="right" if col in {"parameters", "weights per replica", "max_model_len"}
                         else "left", overflow="fold")
    for p in plan.servers:
        s, shape = p.server, p.shape.shape
        serves = ", ".join(f"{c} (adapter)" if c in s.adapters else c for c in s.candidates)
        parallel = f"{s.serve.tensor_parallel_size}×{s.serve.pipeline_parallel_size}×{s.serve.replicas}"
        weights = p.memory.weights * s.per_replica
        table.add_row(s.candidates[0], s.model, serves, _gpus(p), parallel, f"{shape.parameters / 1e9:.2f} B",
                      f"{weights / 1e9:.1f} GB", str(p.memory.max_model_len), p.shape.source)
    for e in plan.elsewhere:
        table.add_row(e.candidate, e.model, e.candidate, e.where, "–", "–", "–", "–", "–")
    return table


def memory_table(plan: CapacityPlan) -> Table:
    table = Table(title=f"Memory per GPU, GiB ({plan.gpu.name}: {plan.gpu.memory_gib:g} GiB)", title_justify="left")
    for col in ("server", "weights", "LoRA slots", "activations", "overhead", "budget", "KV room",
                "KV per token (KiB)", "KV at concurrency", "full-length sequences"):
        table.add_column(col, justify="left" if col == "server" else "right")
    for p in plan.servers:
        m = p.memory
        table.add_row(p.server.candidates[0], _gib(m.weights), _gib(m.lora), _gib(m.activations), _gib(m.overhead),
                      _gib(m.budget), _gib(m.kv_room), f"{m.kv_per_token / 1024:.0f}",
                      f"{_gib(m.kv_needed)} ({p.server.sequences} × {m.max_model_len})",
                      str(m.full_length_sequences))
    return table


def finetune_table(plan: CapacityPlan) -> Table:
    table = Table(title="Fine-tunes: memory per training process, GiB", title_justify="left")
    for col in ("candidate", "model", "processes", "trainable", "base", "LoRA", "gradients", "Adam",
                "activations", "logits", "overhead", "total"):
        table.add_column(col, justify="left" if col in {"candidate", "model", "processes"} else "right")
    for f in plan.finetunes:
        m = f.memory
        table.add_row(f.candidate, f.model, f"{m.processes} ({m.strategy})", f"{m.trainable / 1e6:.1f} M",
                      _gib(m.base), _gib(m.lora), _gib(m.gradients), _gib(m.optimizer), _gib(m.activations),
                      _gib(m.logits), _gib(m.overhead), _gib(m.total))
    return table


def work_table(plan: CapacityPlan) -> Table:
    table = Table(title=f"Work and its estimated time and cost on {plan.gpu.name} (assumptions below)",
                  title_justify="left")
    for col in ("candidate", "stage", "requests / examples", "tokens in (prompts / training)",
                "output tokens (at most)", "time", "cost"):
        table.add_column(col, justify="left" if col in {"candidate", "stage"} else "right")
    for f in plan.finetunes:
        e = f.estimate
        table.add_row(f.candidate, f"fine-tune ({f.memory.processes} GPUs)", f"{e.examples}", f"{e.tokens}", "–",
                      _duration(e.seconds), "–")
    for g in plan.generation:
        table.add_row(g.candidate, "generation", str(g.requests), str(g.prompt_tokens), str(g.output_tokens),
                      _duration(g.seconds), "–" if g.cost is None else f"{g.cost:.2f}")
    return table


def formula_table() -> Table:
    table = Table(title="How the figures are made", title_justify="left")
    table.add_column("figure")
    table.add_column("formula or assumption")
    for prefix, formulas in (("serving", memory.FORMULAS), ("fine-tune", training.FORMULAS),
                             ("estimate", estimate.ASSUMPTIONS)):
        for name, text in formulas.items():
            table.add_row(f"{prefix}: {name}", text)
    return table


def tables(plan: CapacityPlan) -> list[Table]:
    out = [topology_table(plan), *([memory_table(plan)] if plan.servers else [])]
    if plan.finetunes:
        out.append(finetune_table(plan))
    return [*out, work_table(plan), formula_table()]


def _finetune_dict(f: FinetunePlan) -> dict[str, Any]:
    return {"candidate": f.candidate, "model": f.model, "memory_bytes": {**asdict(f.memory), "total": f.memory.total},
            "estimate": asdict(f.estimate)}


def to_dict(plan: CapacityPlan) -> dict[str, Any]:
    """The plan for machines: bytes, seconds, and the formulas the figures come from."""
    servers = [{"candidates": list(p.server.candidates), "adapters": list(p.server.adapters), "model": p.server.model,
                "gpus": [list(r) for r in p.server.devices()], "implicit_gpus": p.server.implicit,
                "tensor_parallel_size": p.server.serve.tensor_parallel_size,
                "pipeline_parallel_size": p.server.serve.pipeline_parallel_size, "replicas": p.server.serve.replicas,
                "concurrent_sequences_per_replica": p.server.sequences, "shape": p.shape.shape.model_dump(),
                "parameters": p.shape.shape.parameters, "shape_from": p.shape.source,
                "memory_per_gpu_bytes": {**asdict(p.memory), "kv_room": p.memory.kv_room,
                                         "kv_needed": p.memory.kv_needed,
                                         "full_length_sequences": p.memory.full_length_sequences}}
               for p in plan.servers]
    return {"suite": plan.suite, "gpu": asdict(plan.gpu), "servers": servers,
            "elsewhere": [asdict(e) for e in plan.elsewhere], "finetunes": [_finetune_dict(f) for f in plan.finetunes],
            "generation": [asdict(g) for g in plan.generation], "notes": plan.notes,
            "formulas": {"serving": memory.FORMULAS, "finetune": training.FORMULAS,
                         "assumptions": estimate.ASSUMPTIONS}}
