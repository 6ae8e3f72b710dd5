"""LoRA fine-tuning with peft on transformers' Trainer, and adapters with lineage, cached by content hash.

Training examples are rendered with the same prompt the evaluation uses (chat template when the model
has one), and the loss covers the answer tokens only. The adapter folder's name carries a hash of
everything that changes the result (`adapter_lineage`), so the same inputs reuse the adapter instead of
training again. Training one adapter is a recipe in torchtune's shape (`_Recipe`: set up, train, save); it
writes into a temporary folder that is renamed at the end: an interrupted run never leaves an adapter that
looks finished.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from harness.adapter_lineage import AdapterIdentity, TrainingSet, identify, weights_digest
from harness.config import Candidate, Suite, TaskSpec
from harness.data import stratified_sample
from harness.data_check import TaskDataReport, without_overlap
from harness.errors import HarnessError
from harness.finetune_spec import FinetuneSpec
from harness.finetune_torchrun import distributed_args, full_adapter, launch, rank_trainer, rank_work, read_job
from harness.models import check_adapter_dir
from harness.plan import RunPlan, parent_of
from harness.prompts import answer_of, render
from harness.records import Example
from harness.store import LINEAGE_FILE


class NotTrained(HarnessError):
    """A lookup without training (`lookup_only`) found no adapter for the candidate's current inputs."""

    def __init__(self, candidate: str, target: Path) -> None:
        super().__init__(f"finetune {candidate}: no adapter trained for its current settings, data and base "
                         f"(none at {target})")
        self.candidate = candidate
        self.target = target


def split_validation(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    import numpy as np

    order = np.random.default_rng(seed).permutation(len(examples))
    n_val = max(1, round(len(examples) * fraction)) if fraction > 0 else 0
    val = {int(i) for i in order[:n_val]}
    return [e for i, e in enumerate(examples) if i not in val], [e for i, e in enumerate(examples) if i in val]


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
    if not data.train:
        raise HarnessError(f"finetune {name}: task {data.task.name} has no training examples")
    tokenizer = _tokenizer(base_dir)
    use_chat = bool(getattr(tokenizer, "chat_template", None)) if chat is None else chat
    base_digest = base_digest or weights_digest(base_dir)
    adapter = identify(base_digest, data, spec, use_chat, parent)
    target = out_root / f"{name}-{adapter.key}"
    if _reusable(target, lookup_only, say):
        return target
    if lookup_only:
        raise NotTrained(name, target)
    if spec.distributed.processes > 1 and "LOCAL_RANK" not in os.environ:
        return launch(base_dir, data, spec, out_root, name, use_chat, base_digest, target, say, parent)
    return _Recipe(base_dir, data, spec, name, adapter, target, use_chat, parent, say).run(tokenizer)


def _tokenizer(base_dir: Path) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _reusable(target: Path, lookup_only: bool, say: Any) -> bool:
    """Whether an adapter trained for the same inputs is there whole (a damaged one is trained again)."""
    if (target / LINEAGE_FILE).is_file():
        problem = check_adapter_dir(target)
        if problem is None:
            say(f"reusing adapter {target}")
            return True
        if not lookup_only:
            say(f"training again: the cached adapter is damaged ({problem})")
    return False


@dataclass(frozen=True)
class _Recipe:
    """Training one adapter in this process (or as one torchrun rank): set up the model and the encoded rows,
    train, and save the adapter with its lineage (under torchrun every rank gathers, rank 0 writes)."""

    base_dir: Path
    data: TrainingSet
    spec: FinetuneSpec
    name: str
    adapter: AdapterIdentity
    target: Path
    chat: bool
    parent: Path | None
    say: Any

    def run(self, tokenizer: Any) -> Path:
        model, dtype = self.setup_model()
        train, val = ([encode_example(tokenizer, self.data.task, ex, self.data.labels, self.chat,
                                      self.spec.max_seq_len) for ex in rows]
                      for rows in (self.data.train, self.data.validation))
        counts = _parameters(model)
        work = _work_dir(self.target, self.name)
        trainer = self.trainer(model, tokenizer, work, train, val, dtype)
        spec = self.spec
        self.say(f"training {self.name}: {len(train)} examples, {counts[0]:,} trainable parameters "
                 f"({counts[0] / counts[1]:.2%}), LoRA r={spec.rank} on {', '.join(spec.target_modules)}"
                 + (f" of the last {spec.last_layers} layers" if spec.last_layers else ""))
        started = time.perf_counter()
        try:
            result = trainer.train()
            wall = time.perf_counter() - started
            lineage = partial(self.lineage, trainer, result, wall, train, len(val), dtype, counts)
            if "LOCAL_RANK" in os.environ:
                self.save_ranks(trainer, work / "adapter", lineage)
            else:
                self.save(trainer, work / "adapter", lineage())
                self.place(work / "adapter")
        finally:
            if os.environ.get("RANK", "0") == "0":
                shutil.rmtree(work, ignore_errors=True)
        return self.target

    def setup_model(self) -> tuple[Any, Any]:
        """The base in the training dtype, checked against the settings, with LoRA: new, or the parent's."""
        from peft import LoraConfig, PeftModel, get_peft_model
        from transformers import AutoModelForCausalLM, set_seed

        spec, name = self.spec, self.name
        dtype = training_dtype(spec.precision)
        model = AutoModelForCausalLM.from_pretrained(self.base_dir, dtype=dtype)
        positions = getattr(model.config, "max_position_embeddings", None)
        if positions and spec.max_seq_len > positions:
            raise HarnessError(f"finetune {name}: max_seq_len {spec.max_seq_len} exceeds the model's {positions}")
        modules = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
        missing = [m for m in spec.target_modules if m not in modules]
        if missing:
            raise HarnessError(f"finetune {name}: target module(s) {missing} not in the model")
        if self.parent is not None:
            model = PeftModel.from_pretrained(model, self.parent, is_trainable=True)
            config = model.peft_config["default"]
            self.say(f"{name} continues {self.parent} (LoRA r={config.r} on "
                     f"{', '.join(sorted(config.target_modules))}; the parent's LoRA settings apply)")
        else:
            set_seed(spec.seed)  # LoRA's A matrices start random: the same on every rank, and from run to run
            lora = LoraConfig(r=spec.rank, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                              target_modules=list(spec.target_modules), task_type="CAUSAL_LM",
                              layers_to_transform=_last_layers(model, spec, name))
            model = get_peft_model(model, lora)
        if spec.gradient_checkpointing:
            model.enable_input_require_grads()
        return model, dtype

    def trainer(self, model: Any, tokenizer: Any, work: Path, train: list[dict[str, list[int]]],
                val: list[dict[str, list[int]]], dtype: Any) -> Any:
        from transformers import DataCollatorForSeq2Seq, EarlyStoppingCallback, Trainer

        patience = self.spec.early_stopping_patience
        trainer_class = rank_trainer() if "LOCAL_RANK" in os.environ else Trainer
        return trainer_class(model=model, args=_training_args(self.spec, work, bool(val), dtype),
                             train_dataset=train, eval_dataset=val or None,
                             data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
                             callbacks=[EarlyStoppingCallback(patience)] if val and patience else [])

    def lineage(self, trainer: Any, result: Any, wall: float, train: list[dict[str, list[int]]], n_validation: int,
                dtype: Any, counts: tuple[int, int]) -> dict[str, Any]:
        """What the adapter was trained from (its key's inputs) and how the training went."""
        spec, (trainable, total) = self.spec, counts
        tokens = sum(len(e["input_ids"]) for e in train) * (result.global_step * spec.batch_size *
                                                            spec.gradient_accumulation * trainer.args.world_size
                                                            / max(len(train), 1))
        history = trainer.state.log_history
        return {
            "candidate": self.name, "adapter_key": self.adapter.key, "base_model": str(self.base_dir),
            **self.adapter.inputs, "generation": self.adapter.generation,
            "task": self.data.task.name, "n_train": len(train), "n_validation": n_validation,
            "trainable_parameters": trainable, "total_parameters": total, "trainable_share": trainable / total,
            "train_loss": [{"step": h["step"], "loss": h["loss"]} for h in history if "loss" in h],
            "validation_loss": [{"step": h["step"], "loss": h["eval_loss"]} for h in history if "eval_loss" in h],
            "steps": result.global_step, "wall_s": wall, "tokens_per_s": tokens / wall if wall else None,
            "best_checkpoint_loss": trainer.state.best_metric, "dtype": str(dtype).removeprefix("torch."),
        }

    def save(self, trainer: Any, adapter_dir: Path, lineage: dict[str, Any],
             state: dict[str, Any] | None = None) -> None:
        """The adapter (the whole `state` gathered from the ranks, under torchrun) and its lineage."""
        trainer.model.save_pretrained(adapter_dir, **({} if state is None else {"state_dict": state}))
        (adapter_dir / LINEAGE_FILE).write_text(json.dumps(lineage, indent=2))

    def save_ranks(self, trainer: Any, adapter_dir: Path, lineage: Callable[[], dict[str, Any]]) -> None:
        """Under torchrun: every rank helps gather the whole adapter (FSDP leaves each a shard of it) and what each
        trained; rank 0 writes them, and renames the adapter into place only once every rank is through."""
        state = full_adapter(trainer, self.spec, self.name)
        ranks = rank_work(trainer, self.spec)
        if trainer.is_world_process_zero():
            self.save(trainer, adapter_dir, {**lineage(), "distributed": ranks}, state)
        trainer.accelerator.wait_for_everyone()
        if trainer.is_world_process_zero():
            self.place(adapter_dir)

    def place(self, adapter_dir: Path) -> None:
        """The written adapter renamed into place in one step."""
        if self.target.exists():
            shutil.rmtree(self.target)
        adapter_dir.rename(self.target)


def _parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters."""
    return (sum(p.numel() for p in model.parameters() if p.requires_grad),
            sum(p.numel() for p in model.parameters()))


def _work_dir(target: Path, name: str) -> Path:
    """Where training writes before the rename, beside the target; under torchrun every rank must see the same one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if "LOCAL_RANK" not in os.environ:
        return Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}-"))
    work = target.parent / f".{target.name}-work"
    work.mkdir(parents=True, exist_ok=True)
    return work


def _training_args(spec: FinetuneSpec, work: Path, validate: bool, dtype: Any) -> Any:
    import torch
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(work / "trainer"), per_device_train_batch_size=spec.batch_size,
        per_device_eval_batch_size=spec.batch_size, gradient_accumulation_steps=spec.gradient_accumulation,
        # A float below 1 is a share of the steps (transformers 5 folded warmup_ratio into warmup_steps).
        learning_rate=spec.learning_rate, lr_scheduler_type=spec.scheduler, warmup_steps=spec.warmup_ratio,
        num_train_epochs=spec.epochs, max_steps=spec.max_steps or -1, logging_steps=spec.eval_steps,
        eval_strategy="steps" if validate else "no", eval_steps=spec.eval_steps,
        save_strategy="steps" if validate else "no", save_steps=spec.eval_steps, save_total_limit=1,
        load_best_model_at_end=validate, metric_for_best_model="eval_loss", greater_is_better=False,
        seed=spec.seed, data_seed=spec.seed,
        # Validation needs the loss only, not every position's logits over the whole vocabulary gathered in memory.
        prediction_loss_only=True,
        # On GPU, autocast keeps the arithmetic of the float32 LoRA weights in bfloat16 too.
        bf16=dtype == torch.bfloat16 and torch.cuda.is_available(),
        gradient_checkpointing=spec.gradient_checkpointing, report_to=[], disable_tqdm=False,
        remove_unused_columns=False, use_cpu=not torch.cuda.is_available(), **distributed_args(spec),
        # Batches of similar lengths waste less compute on padding (seeded, so still reproducible).
        train_sampling_strategy="group_by_length",
    )


def _last_layers(model: Any, spec: FinetuneSpec, name: str) -> list[int] | None:
    if spec.last_layers is None:
        return None
    n_layers = getattr(model.config.get_text_config(), "num_hidden_layers", None)
    if n_layers is None:
        raise HarnessError(f"finetune {name}: last_layers needs a model that states num_hidden_layers")
    if spec.last_layers > n_layers:
        raise HarnessError(f"finetune {name}: last_layers {spec.last_layers} exceeds the model's {n_layers} layers")
    return list(range(n_layers - spec.last_layers, n_layers))


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
        train_adapter(**read_job(sys.argv[1]))  # one torchrun rank
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
