"""LoRA fine-tuning with peft on transformers' Trainer, and adapters with lineage, cached by content hash.

Training examples are rendered with the same prompt the evaluation uses (chat template when the model
has one), and the loss covers the answer tokens only. The adapter folder's name carries a hash of
everything that changes the result (base weights, training data, prompt, training settings, library
versions), so the same inputs reuse the adapter instead of training again. Training writes into a
temporary folder that is renamed at the end: an interrupted run never leaves an adapter that looks
finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.config import Candidate, FinetuneSpec, Suite, TaskSpec
from harness.data import stratified_sample
from harness.data_check import TaskDataReport, without_overlap
from harness.errors import HarnessError
from harness.models import check_adapter_dir
from harness.plan import RunPlan, parent_of
from harness.prompts import answer_of, render
from harness.records import Example
from harness.store import LINEAGE_FILE, read_lineage


class NotTrained(HarnessError):
    """A lookup without training (`lookup_only`) found no adapter for the candidate's current inputs."""

    def __init__(self, candidate: str, target: Path) -> None:
        super().__init__(f"finetune {candidate}: no adapter trained for its current settings, data and base "
                         f"(none at {target})")
        self.candidate = candidate
        self.target = target


@dataclass(frozen=True)
class TrainingSet:
    task: TaskSpec
    train: list[Example]
    validation: list[Example]
    labels: list[str] | None


def split_validation(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    import numpy as np

    order = np.random.default_rng(seed).permutation(len(examples))
    n_val = max(1, round(len(examples) * fraction)) if fraction > 0 else 0
    val = {int(i) for i in order[:n_val]}
    return [e for i, e in enumerate(examples) if i not in val], [e for i, e in enumerate(examples) if i in val]


def _weights_digest(model_dir: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("*.json")):
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for block in iter(partial(handle.read, 1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def _examples_digest(examples: list[Example]) -> str:
    blob = json.dumps([[e.id, e.inputs, e.reference] for e in examples], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def adapter_key(base_digest: str, data: TrainingSet, spec: FinetuneSpec, chat: bool,
                parent: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """The content hash naming an adapter, and what went into it (the parent adapter's identity included)."""
    inputs = {
        # Only successors carry a parent, so adapters trained before `parent` existed keep their keys.
        **({"parent": parent} if parent is not None else {}),
        "base_sha256": base_digest,
        "train_sha256": _examples_digest(data.train),
        "validation_sha256": _examples_digest(data.validation),
        "prompt": data.task.prompt.model_dump(),
        "labels": data.labels,
        "chat": chat,
        # The extra rows and the parent count by content (train_sha256, the parent record), not by path.
        "config": spec.model_dump(mode="json", exclude={"extra_train", "parent"}),
        "versions": {p: _version(p) for p in ("torch", "transformers", "peft")},
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16], inputs


def parent_record(adapter: Path) -> dict[str, Any]:
    """What names a parent adapter in its successor's lineage: its folder, content key, candidate and generation
    (1 for an adapter trained from the base), or its weights' hash when it was not trained here."""
    lineage = read_lineage(adapter)
    weights = hashlib.sha256((adapter / "adapter_model.safetensors").read_bytes()).hexdigest()
    return {"adapter": str(adapter), "adapter_key": lineage.get("adapter_key"), "weights_sha256": weights,
            "candidate": lineage.get("candidate"), "generation": int(lineage.get("generation", 1))}


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def training_dtype(precision: str) -> Any:
    """bfloat16 halves the memory and (with native support: recent GPUs, CPUs with AVX512-BF16 or AMX)
    roughly doubles the speed; the LoRA weights themselves stay float32 (peft upcasts them)."""
    import torch

    from harness.models import native_dtype

    return getattr(torch, native_dtype() if precision == "auto" else precision)


def encode_example(tokenizer: Any, task: TaskSpec, ex: Example, labels: list[str] | None, chat: bool,
                   max_len: int) -> dict[str, list[int]]:
    prompt = render(task, ex, [], labels)
    answer = answer_of(ex)
    if chat:
        prefix = tokenizer.apply_chat_template(prompt.messages, tokenize=False, add_generation_prompt=True)
        prompt_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    else:
        prompt_ids = tokenizer(prompt.text, add_special_tokens=True)["input_ids"]
        answer_ids = tokenizer(" " + answer, add_special_tokens=False)["input_ids"]
    answer_ids = [*answer_ids, tokenizer.eos_token_id]
    ids = (prompt_ids + answer_ids)[-max_len:]
    n_answer = min(len(answer_ids), len(ids))
    # Loss on the answer tokens only: the prompt positions are masked with -100.
    labels_ = [-100] * (len(ids) - n_answer) + ids[-n_answer:]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels_}


def train_adapter(base_dir: Path, data: TrainingSet, spec: FinetuneSpec, out_root: Path, name: str,
                  chat: bool | None = None, say: Any = print, base_digest: str | None = None,
                  parent: Path | None = None, lookup_only: bool = False) -> Path:
    """Train (or reuse) the LoRA adapter; returns its folder under out_root. `base_digest` is the base
    weights' hash when already known (torchrun workers get it from the launcher, not hashing again).
    With a `parent` adapter, training continues from its weights and LoRA settings (a successor).
    `lookup_only` finds the adapter without training, raising NotTrained where it is not there."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        EarlyStoppingCallback,
        Trainer,
        TrainingArguments,
    )

    if not data.train:
        raise HarnessError(f"finetune {name}: task {data.task.name} has no training examples")
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    use_chat = bool(getattr(tokenizer, "chat_template", None)) if chat is None else chat
    base_digest = base_digest or _weights_digest(base_dir)
    parent_info = parent_record(parent) if parent is not None else None
    key, inputs = adapter_key(base_digest, data, spec, use_chat, parent_info)
    target = out_root / f"{name}-{key}"
    if (target / LINEAGE_FILE).is_file():
        problem = check_adapter_dir(target)
        if problem is None:
            say(f"reusing adapter {target}")
            return target
        if not lookup_only:
            say(f"training again: the cached adapter is damaged ({problem})")
    if lookup_only:
        raise NotTrained(name, target)

    if spec.distributed.processes > 1 and "LOCAL_RANK" not in os.environ:
        return _launch(base_dir, data, spec, out_root, name, use_chat, base_digest, target, say, parent)

    dtype = training_dtype(spec.precision)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype)
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions and spec.max_seq_len > positions:
        raise HarnessError(f"finetune {name}: max_seq_len {spec.max_seq_len} exceeds the model's {positions}")
    modules = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [m for m in spec.target_modules if m not in modules]
    if missing:
        raise HarnessError(f"finetune {name}: target module(s) {missing} not in the model")
    if parent is not None:
        model = PeftModel.from_pretrained(model, parent, is_trainable=True)
        config = model.peft_config["default"]
        say(f"{name} continues {parent} (LoRA r={config.r} on {', '.join(sorted(config.target_modules))}; "
            "the parent's LoRA settings apply)")
    else:
        lora = LoraConfig(r=spec.rank, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                          target_modules=list(spec.target_modules), task_type="CAUSAL_LM",
                          layers_to_transform=_last_layers(model, spec, name))
        model = get_peft_model(model, lora)
    if spec.gradient_checkpointing:
        model.enable_input_require_grads()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())

    encode = [encode_example(tokenizer, data.task, ex, data.labels, use_chat, spec.max_seq_len) for ex in data.train]
    val = [encode_example(tokenizer, data.task, ex, data.labels, use_chat, spec.max_seq_len) for ex in data.validation]
    out_root.mkdir(parents=True, exist_ok=True)
    # Under torchrun every rank must see the same output folder; rank 0 alone writes the adapter.
    distributed = "LOCAL_RANK" in os.environ
    work = out_root / f".{name}-{key}-work" if distributed else Path(tempfile.mkdtemp(dir=out_root,
                                                                                       prefix=f".{name}-"))
    work.mkdir(parents=True, exist_ok=True)
    # On GPU, autocast keeps the arithmetic of the float32 LoRA weights in bfloat16 too.
    bf16 = dtype == torch.bfloat16 and torch.cuda.is_available()
    args = TrainingArguments(
        output_dir=str(work / "trainer"), per_device_train_batch_size=spec.batch_size,
        per_device_eval_batch_size=spec.batch_size, gradient_accumulation_steps=spec.gradient_accumulation,
        # A float below 1 is a share of the steps (transformers 5 folded warmup_ratio into warmup_steps).
        learning_rate=spec.learning_rate, lr_scheduler_type=spec.scheduler, warmup_steps=spec.warmup_ratio,
        num_train_epochs=spec.epochs, max_steps=spec.max_steps or -1, logging_steps=spec.eval_steps,
        eval_strategy="steps" if val else "no", eval_steps=spec.eval_steps, save_strategy="steps" if val else "no",
        save_steps=spec.eval_steps, save_total_limit=1, load_best_model_at_end=bool(val),
        metric_for_best_model="eval_loss", greater_is_better=False, seed=spec.seed, data_seed=spec.seed,
        # Validation needs the loss only, not every position's logits over the whole vocabulary gathered in memory.
        prediction_loss_only=True,
        bf16=bf16, gradient_checkpointing=spec.gradient_checkpointing, report_to=[], disable_tqdm=False,
        remove_unused_columns=False, use_cpu=not torch.cuda.is_available(), **_distributed_args(spec),
        # Batches of similar lengths waste less compute on padding (seeded, so still reproducible).
        train_sampling_strategy="group_by_length",
    )
    callbacks = [EarlyStoppingCallback(spec.early_stopping_patience)] if val and spec.early_stopping_patience else []
    trainer = Trainer(model=model, args=args, train_dataset=encode, eval_dataset=val or None,
                      data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
                      callbacks=callbacks)
    say(f"training {name}: {len(encode)} examples, {trainable:,} trainable parameters "
        f"({trainable / total:.2%}), LoRA r={spec.rank} on {', '.join(spec.target_modules)}"
        + (f" of the last {spec.last_layers} layers" if spec.last_layers else ""))
    started = time.perf_counter()
    try:
        result = trainer.train()
        wall = time.perf_counter() - started
        if not trainer.is_world_process_zero():
            return target
        adapter_dir = work / "adapter"
        trainer.model.save_pretrained(adapter_dir)
        tokens = sum(len(e["input_ids"]) for e in encode) * (result.global_step * spec.batch_size *
                                                             spec.gradient_accumulation * trainer.args.world_size
                                                             / max(len(encode), 1))
        history = trainer.state.log_history
        lineage = {
            "candidate": name, "adapter_key": key, "base_model": str(base_dir), **inputs,
            "generation": parent_info["generation"] + 1 if parent_info else 1,
            "task": data.task.name, "n_train": len(encode), "n_validation": len(val),
            "trainable_parameters": trainable, "total_parameters": total, "trainable_share": trainable / total,
            "train_loss": [{"step": h["step"], "loss": h["loss"]} for h in history if "loss" in h],
            "validation_loss": [{"step": h["step"], "loss": h["eval_loss"]} for h in history if "eval_loss" in h],
            "steps": result.global_step, "wall_s": wall, "tokens_per_s": tokens / wall if wall else None,
            "best_checkpoint_loss": trainer.state.best_metric, "dtype": str(dtype).removeprefix("torch."),
        }
        (adapter_dir / LINEAGE_FILE).write_text(json.dumps(lineage, indent=2))
        if target.exists():
            shutil.rmtree(target)
        adapter_dir.rename(target)
    finally:
        if os.environ.get("RANK", "0") == "0":
            shutil.rmtree(work, ignore_errors=True)
    return target


def _last_layers(model: Any, spec: FinetuneSpec, name: str) -> list[int] | None:
    if spec.last_layers is None:
        return None
    n_layers = getattr(model.config.get_text_config(), "num_hidden_layers", None)
    if n_layers is None:
        raise HarnessError(f"finetune {name}: last_layers needs a model that states num_hidden_layers")
    if spec.last_layers > n_layers:
        raise HarnessError(f"finetune {name}: last_layers {spec.last_layers} exceeds the model's {n_layers} layers")
    return list(range(n_layers - spec.last_layers, n_layers))


def _distributed_args(spec: FinetuneSpec) -> dict[str, Any]:
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


def _launch(base_dir: Path, data: TrainingSet, spec: FinetuneSpec, out_root: Path, name: str, chat: bool,
            base_digest: str, target: Path, say: Any, parent: Path | None) -> Path:
    """Train with one process per GPU under torchrun (PyTorch's own launcher); rank 0 writes the adapter."""
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
        with log.open("w") as sink:
            code = subprocess.run(cmd, stdout=sink, stderr=subprocess.STDOUT, check=False).returncode
    finally:
        Path(handle.name).unlink(missing_ok=True)
    if code != 0 or not (target / LINEAGE_FILE).is_file():
        lines = log.read_text().strip().splitlines()
        ours = [line for line in lines if line.startswith("error: ")]
        tail = ours[0].removeprefix("error: ") if ours else " | ".join(lines[-3:])
        raise HarnessError(f"finetune {name}: distributed training failed (exit {code}, log {log}): {tail}")
    log.unlink()
    return target


def _worker(job_file: str) -> None:
    job = json.loads(Path(job_file).read_text())
    task = TaskSpec.model_validate(job["task"])
    data = TrainingSet(task, [Example(**e) for e in job["train"]], [Example(**e) for e in job["validation"]],
                       job["labels"])
    train_adapter(Path(job["base_dir"]), data, FinetuneSpec.model_validate(job["spec"]), Path(job["out_root"]),
                  job["name"], job["chat"], base_digest=job["base_sha256"],
                  parent=Path(job["parent"]) if job.get("parent") else None)


def finetune_candidate(candidate: Candidate, task: TaskSpec, train: list[Example], labels: list[str] | None,
                       base_dir: Path, out_root: Path, say: Any = print, test: list[Example] | None = None,
                       extra: list[Example] | None = None, parent: Path | None = None,
                       lookup_only: bool = False) -> Path:
    """The candidate's training rows (`limit` samples the task's own split; `extra` rows are all kept, less
    those already in it), decontaminated where asked, then trained from the base or from `parent`."""
    spec = candidate.finetune
    assert spec is not None
    if spec.decontaminate and test:
        kept = without_overlap(train, test)
        if len(kept) < len(train):
            say(f"{candidate.name}: dropped {len(train) - len(kept)} training rows that occur in the test split")
        train = kept
    rows = stratified_sample(train, spec.limit, spec.seed, stratify=labels is not None) if spec.limit else train
    if extra:
        new = without_overlap(extra, train)
        clean = without_overlap(new, test or [])
        if len(clean) < len(new) and not spec.decontaminate:
            raise HarnessError(f"finetune {candidate.name}: {len(new) - len(clean)} extra_train rows occur in the "
                               f"test split of {task.name}; set `decontaminate: true` in the fine-tune to drop them")
        say(f"{candidate.name}: {len(clean)} extra training rows ({len(extra) - len(new)} already in the training "
            f"split and {len(new) - len(clean)} in the test split, left out)")
        rows = rows + clean
    fit, validation = split_validation(rows, spec.validation_fraction, spec.seed)
    return train_adapter(base_dir, TrainingSet(task, fit, validation, labels), spec, out_root, candidate.name,
                         candidate.options.chat_template(), say, parent=parent, lookup_only=lookup_only)


def _with_parents(suite: Suite, only: str | None) -> set[str]:
    """The candidates to fine-tune: `only` and the suite candidates it continues, or all."""
    if only is None:
        return {c.name for c in suite.candidates}
    wanted: set[str] = set()
    name: str | None = only
    while name is not None and name not in wanted and any(c.name == name for c in suite.candidates):
        wanted.add(name)
        spec = suite.candidate(name).finetune
        name = spec.parent if spec else None
    return wanted


def finetune_all(run_plan: RunPlan, reports: list[TaskDataReport], root: Path, say: Callable[[str], None],
                 only: str | None = None, timings: dict[str, float] | None = None,
                 lookup_only: bool = False) -> dict[str, Path]:
    """Train (or reuse, by content hash) the LoRA adapter of every candidate with a `finetune:` block, parents
    before their successors; each one's seconds (about 0 when reused) into `timings` as CANDIDATE/finetune.
    `lookup_only` finds the adapters already trained, raising NotTrained for the first that is not."""
    from harness import models

    tasks = {t.name: t for t in run_plan.tasks}
    blocked = {r.task: r.blocking[0] for r in reports if r.blocking}
    wanted = _with_parents(run_plan.suite, only)
    adapters: dict[str, Path] = {}
    for cand in run_plan.suite.candidates:
        if cand.finetune is None or cand.name not in wanted:
            continue
        task = tasks[cand.finetune.task]
        if task.name in blocked and not cand.finetune.decontaminate:
            raise HarnessError(f"finetune {cand.name}: the data check of {task.name} blocks training: "
                               f"{blocked[task.name]}; set `decontaminate: true` in the fine-tune to drop "
                               "those rows, or `allow_overlap: true` in the suite to accept them")
        parent_name, parent = parent_of(cand, run_plan.suite)
        if parent_name is not None and parent is None:
            parent = adapters[parent_name]  # trained just before, in suite order (checked by the planner)
        base = Path(models.resolve(cand.model, say))
        started = time.perf_counter()
        adapters[cand.name] = finetune_candidate(
            cand, task.spec_for(cand), task.data.train, task.data.labels, base, root, say, test=task.data.test,
            extra=run_plan.extra_train.get(cand.name, []), parent=parent, lookup_only=lookup_only)
        if timings is not None:
            timings[f"{cand.name}/finetune"] = round(time.perf_counter() - started, 3)
    return adapters


if __name__ == "__main__":
    try:
        _worker(sys.argv[1])
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
