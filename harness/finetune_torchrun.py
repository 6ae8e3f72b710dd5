"""A fine-tune on several GPUs through torchrun (PyTorch's own launcher): the launcher writes the training set and
settings to a job file and runs `python -m harness.finetune JOB` once per GPU; every rank trains the same recipe
(the Trainer does DDP or FSDP) and rank 0 writes the adapter. The single-process path needs none of this. A signal to
the harness stops torchrun and every worker (`harness.lifecycle`)."""

from __future__ import annotations

import json
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
from harness.store import LINEAGE_FILE


def distributed_args(spec: FinetuneSpec) -> dict[str, Any]:
    """The Trainer's arguments for DDP or FSDP; none for one process."""
    import torch

    d = spec.distributed
    if d.processes == 1:
        return {}
    args: dict[str, Any] = {"ddp_backend": "nccl" if torch.cuda.is_available() else "gloo",
                            "ddp_find_unused_parameters": False}
    if d.strategy == "fsdp":
        args["fsdp"] = "full_shard auto_wrap"
        args["fsdp_config"] = {"use_orig_params": True, **({"transformer_layer_cls_to_wrap": [d.fsdp_wrap]}
                                                           if d.fsdp_wrap else {})}
    return args


def launch(base_dir: Path, data: TrainingSet, spec: FinetuneSpec, out_root: Path, name: str, chat: bool,
           base_digest: str, target: Path, say: Any, parent: Path | None) -> Path:
    """Train with one process per GPU under torchrun; rank 0 writes the adapter."""
    out_root.mkdir(parents=True, exist_ok=True)
    job = {"base_dir": str(base_dir), "task": data.task.model_dump(mode="json"), "labels": data.labels,
           "train": [asdict(e) for e in data.train], "validation": [asdict(e) for e in data.validation],
           "spec": spec.model_dump(mode="json"), "out_root": str(out_root), "name": name, "chat": chat,
           "base_sha256": base_digest, "parent": str(parent) if parent else None}
    with tempfile.NamedTemporaryFile("w", dir=out_root, prefix=f".{name}-job-", suffix=".json",
                                     delete=False) as handle:
        json.dump(job, handle)
    log = out_root / f".{name}-torchrun.log"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={spec.distributed.processes}", "-m", "harness.finetune", handle.name]
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
        lines = log.read_text().strip().splitlines()
        ours = [line for line in lines if line.startswith("error: ")]
        tail = ours[0].removeprefix("error: ") if ours else " | ".join(lines[-3:])
        raise HarnessError(f"finetune {name}: distributed training failed (exit {code}, log {log}): {tail}")
    log.unlink()
    return target


def read_job(job_file: str) -> dict[str, Any]:
    """`train_adapter`'s arguments, as `launch` wrote them for each rank."""
    job = json.loads(Path(job_file).read_text())
    data = TrainingSet(TaskSpec.model_validate(job["task"]), [Example(**e) for e in job["train"]],
                       [Example(**e) for e in job["validation"]], job["labels"])
    return {"base_dir": Path(job["base_dir"]), "data": data, "spec": FinetuneSpec.model_validate(job["spec"]),
            "out_root": Path(job["out_root"]), "name": job["name"], "chat": job["chat"],
            "base_digest": job["base_sha256"], "parent": Path(job["parent"]) if job.get("parent") else None}
