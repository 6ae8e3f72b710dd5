"""The settings of a LoRA fine-tune (a candidate's `finetune:` block), below `config.py` as the manifest's are: the
suite holds them, the fine-tuning stage reads them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from harness.schema import Settings


class DistributedSpec(Settings):
    """Training on several GPUs through torchrun (one process per GPU) and transformers' Trainer."""

    processes: Annotated[int, Field(gt=0)] = Field(1, description="processes (GPUs) on this machine")
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp", description="ddp: a full copy of the base per GPU; fsdp: the base sharded across GPUs (70B)")
    fsdp_wrap: str | None = Field(None, description="fsdp: the decoder layer class to wrap, e.g. LlamaDecoderLayer")


class FinetuneSpec(Settings):
    """A LoRA fine-tune of the candidate's model on one task's training split (peft + transformers)."""

    task: str = Field(description="the suite task whose training split is used")
    limit: Annotated[int, Field(gt=0)] | None = Field(None, description="seeded stratified subset of train")
    decontaminate: bool = Field(False, description="drop training rows that also occur in the test split; "
                                "train/test overlap then no longer blocks training")
    validation_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.1
    rank: Annotated[int, Field(gt=0)] = 8
    alpha: Annotated[float, Field(gt=0)] = 16
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.05
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    last_layers: Annotated[int, Field(gt=0)] | None = Field(
        None, description="LoRA on the last N transformer layers only (default: all): the backward pass stops "
        "below them, so a step costs less, and the adapter learns less")
    epochs: Annotated[float, Field(gt=0)] = 1.0
    max_steps: Annotated[int, Field(gt=0)] | None = None
    learning_rate: Annotated[float, Field(gt=0)] = 2e-4
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.03
    batch_size: Annotated[int, Field(gt=0)] = 8
    gradient_accumulation: Annotated[int, Field(gt=0)] = 1
    max_seq_len: Annotated[int, Field(gt=0)] = 512
    eval_steps: Annotated[int, Field(gt=0)] = 20
    early_stopping_patience: Annotated[int, Field(ge=0)] = 3
    gradient_checkpointing: bool = False
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="auto: bfloat16 where the GPU or CPU computes it natively, else float32")
    distributed: DistributedSpec = DistributedSpec()
    seed: Annotated[int, Field(ge=0)] = 0
    extra_train: list[str] = Field(
        default_factory=list, description="more training rows in the task's own columns (CSV, JSONL or Parquet, "
        "paths relative to the suite), e.g. reviewed traffic from `harness monitor --export-labelled`")
    parent: str | None = Field(
        None, description="continue training this adapter (a suite candidate's name, or an adapter folder read "
        "as `adapter:` is); the successor's lineage names it")
