"""A fine-tune on several GPUs through torchrun (PyTorch's own launcher): the launcher writes the training set and
settings to a job file and runs `python -m harness.finetune JOB` once per GPU; every rank trains the same recipe (the
Trainer does DDP or FSDP), every rank takes part in gathering the whole adapter (under FSDP each holds a shard of it)
and what each rank trained on, and rank 0 writes them once every rank is through. The launcher then reads the lineage
back: as many ranks as processes asked, each with the same non-zero number of optimizer steps, or no adapter. The
single-process path needs none of this. A signal to the harness stops torchrun and every worker
(`harness.lifecycle`)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from harness import lifecycle
from harness.adapter_lineage import TrainingSet
from harness.config import TaskSpec
from harness.errors import HarnessError
from harness.finetune_spec import FinetuneSpec
from harness.records import Example
from harness.store import LINEAGE_FILE, read_lineage


def distributed_args(spec: FinetuneSpec) -> dict[str, Any]:
    """The Trainer's arguments for DDP or FSDP; none for one process."""
    import torch

    d = spec.distributed
    if d.processes == 1:
        return {}
    args: dict[str, Any] = {"ddp_backend": "nccl" if torch.cuda.is_available() else "gloo",
                            "ddp_find_unused_parameters": False}
    if d.strategy == "fsdp":
        # FSDP2 (per-parameter sharding): the default of recent transformers 5, named since earlier 5.x default to 1.
        args["fsdp"] = "full_shard auto_wrap"
        args["fsdp_config"] = {"version": 2, "state_dict_type": "FULL_STATE_DICT",
                               **({"transformer_layer_cls_to_wrap": [d.fsdp_wrap]} if d.fsdp_wrap else {})}
    return args


def rank_trainer() -> Any:
    """transformers' Trainer that counts the examples and answer tokens this rank trained on, and that shards the
    model under FSDP on CPU processes too: accelerate (1.x) runs an FSDP plugin on CPU as plain DDP without a word,
    so the CPU rehearsal of an FSDP fine-tune would otherwise test DDP (torch's FSDP2 itself runs on gloo)."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
    from transformers import Trainer

    class RankTrainer(Trainer):
        examples = 0
        answer_tokens = 0

        def create_accelerator_and_postprocess(self) -> None:
            super().create_accelerator_and_postprocess()
            state = self.accelerator.state
            if self.args.fsdp_plugin_args and state.distributed_type == DistributedType.MULTI_CPU:
                state.fsdp_plugin = FullyShardedDataParallelPlugin(**self.args.fsdp_plugin_args)
                state.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP
                self.is_fsdp_enabled = True

        def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Any:
            self.examples += int(inputs["input_ids"].shape[0])
            self.answer_tokens += int((inputs["labels"] != -100).sum())
            return super().training_step(model, inputs, num_items_in_batch)

    return RankTrainer


def full_adapter(trainer: Any, spec: FinetuneSpec, name: str) -> dict[str, Any]:
    """Every trainable (LoRA) tensor whole, on CPU. Under FSDP each rank holds a shard of each (a DTensor) and
    `full_tensor` is a collective, so every rank calls this, in the same order; the frozen base is not gathered."""
    params = [(n, p.detach()) for n, p in trainer.model.named_parameters() if p.requires_grad]
    sharded = any(hasattr(p, "full_tensor") for _, p in params)
    if spec.distributed.strategy == "fsdp" and not sharded:
        raise HarnessError(f"finetune {name}: strategy fsdp, yet the model was not sharded (accelerate ran it as "
                           f"{trainer.accelerator.distributed_type}); no adapter written")
    return {n: (p.full_tensor() if hasattr(p, "full_tensor") else p).cpu().clone() for n, p in params}


def rank_work(trainer: Any, spec: FinetuneSpec) -> dict[str, Any]:
    """The world size and what every rank trained (optimizer steps, examples, answer tokens), gathered from all
    ranks (a collective: every rank calls it)."""
    import torch
    import torch.distributed as dist

    mine = torch.tensor([trainer.state.global_step, trainer.examples, trainer.answer_tokens], dtype=torch.int64,
                        device=trainer.args.device)
    every = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(every, mine)
    sharded = any(hasattr(p, "full_tensor") for p in trainer.model.parameters())
    return {"world_size": len(every), "strategy": spec.distributed.strategy, "backend": dist.get_backend(),
            "sharded": sharded,
            "ranks": [{"rank": i, "optimizer_steps": s, "examples": e, "answer_tokens": t}
                      for i, (s, e, t) in enumerate(w.tolist() for w in every)]}


def rank_problem(lineage: dict[str, Any], spec: FinetuneSpec) -> str | None:
    """Why an adapter's lineage does not show the processes asked each doing the same, non-zero training (None when
    it does): a rank that never joined, or one that idled, would leave the adapter trained on part of the data."""
    d, asked = lineage.get("distributed") or {}, spec.distributed.processes
    ranks = d.get("ranks") or []
    if d.get("world_size") != asked or len(ranks) != asked:
        return f"its lineage records {d.get('world_size', 'no')} process(es) training, not the {asked} asked"
    idle = [r["rank"] for r in ranks if r["optimizer_steps"] <= 0 or r["examples"] <= 0]
    if idle:
        return f"rank(s) {', '.join(map(str, idle))} did no training work"
    steps = [r["optimizer_steps"] for r in ranks]
    if len(set(steps)) > 1:
        return f"the ranks took different numbers of optimizer steps ({', '.join(map(str, steps))})"
    if spec.distributed.strategy == "fsdp" and not d.get("sharded"):
        return "strategy fsdp, yet its lineage says the model was not sharded"
    return None


def launch(base_dir: Path, data: TrainingSet, spec: FinetuneSpec, out_root: Path, name: str, chat: bool,
           base_digest: str, target: Path, say: Any, parent: Path | None) -> Path:
    """Train with one process per GPU under torchrun; rank 0 writes the adapter, kept only when its lineage shows
    every process asked doing its share."""
    out_root.mkdir(parents=True, exist_ok=True)
    job = {"base_dir": str(base_dir), "task": data.task.model_dump(mode="json"), "labels": data.labels,
           "train": [asdict(e) for e in data.train], "validation": [asdict(e) for e in data.validation],
           "spec": spec.model_dump(mode="json"), "out_root": str(out_root), "name": name, "chat": chat,
           "base_sha256": base_digest, "parent": str(parent) if parent else None}
    with tempfile.NamedTemporaryFile("w", dir=out_root, prefix=f".{name}-job-", suffix=".json",
                                     delete=False) as handle:
        json.dump(job, handle)
    log = out_root / f".{name}-torchrun.log"
    cmd = torchrun_command(spec, handle.name)
    say(f"training {name} on {spec.distributed.processes} processes ({spec.distributed.strategy}): "
        f"{' '.join(cmd[1:])}")
    try:
        # torchrun in a session of its own, each worker in one of its own: a signal to the harness stops them all
        # (the launcher first, which stops its workers; then what is left).
        with lifecycle.guard(), log.open("w") as sink:
            process = lifecycle.start(cmd, stdout=sink, stderr=subprocess.STDOUT)
            try:
                code = process.wait()
            finally:
                lifecycle.stop(process)
    finally:
        Path(handle.name).unlink(missing_ok=True)
    if code != 0 or not (target / LINEAGE_FILE).is_file():
        raise HarnessError(f"finetune {name}: distributed training failed (exit {code}, log {log}): "
                           f"{_failure(log).removeprefix(f'finetune {name}: ')}")
    problem = rank_problem(read_lineage(target), spec)
    if problem is not None:
        shutil.rmtree(target)
        raise HarnessError(f"finetune {name}: the {spec.distributed.processes}-process training is refused, "
                           f"no adapter kept: {problem} (log {log})")
    log.unlink()
    return target


def _failure(log: Path) -> str:
    """The line that says why: a rank's own error line, else the first exception a rank raised, else the end."""
    lines = log.read_text().strip().splitlines()
    ours = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
    raised = [line for line in lines if re.match(r"\[rank\d+\]: \w+(Error|Exception): ", line)]
    return (ours or raised or [" | ".join(lines[-3:])])[0]


def torchrun_command(spec: FinetuneSpec, job_file: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={spec.distributed.processes}", "-m", "harness.finetune", job_file]


def read_job(job_file: str) -> dict[str, Any]:
    """`train_adapter`'s arguments, as `launch` wrote them for each rank."""
    job = json.loads(Path(job_file).read_text())
    data = TrainingSet(TaskSpec.model_validate(job["task"]), [Example(**e) for e in job["train"]],
                       [Example(**e) for e in job["validation"]], job["labels"])
    return {"base_dir": Path(job["base_dir"]), "data": data, "spec": FinetuneSpec.model_validate(job["spec"]),
            "out_root": Path(job["out_root"]), "name": job["name"], "chat": job["chat"],
            "base_digest": job["base_sha256"], "parent": Path(job["parent"]) if job.get("parent") else None}
