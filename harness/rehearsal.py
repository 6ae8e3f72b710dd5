"""`harness run SUITE --rehearse`: the suite on this CPU before a GPU is rented. Each model is replaced by an embedded
one of the same role (the model the suite fine-tunes, its base, by SmolLM2; every other model, the big baselines, by
Gemma), keeping the topology where a CPU can: data-parallel replicas stay separate vLLM processes, tensor parallelism
runs on vLLM's CPU backend over as many cores as there are (one per rank), a fine-tune keeps its torchrun launcher and
strategy on up to two CPU processes (gloo), and the manifest is the suite's own. What cannot be kept (GPU ids, pipeline
stages, a chat template the stand-in lacks, a hosted endpoint) is changed and said, one note each; a rehearsal's verdict
is about the stand-ins, never the real models."""

from __future__ import annotations

import os
from dataclasses import dataclass

from harness.backends.openai_compat import ClientOptions
from harness.backends.vllm_server import ServeSpec, VllmOptions
from harness.config import Candidate, Suite, TaskRef
from harness.errors import HarnessError
from harness.finetune_spec import FinetuneSpec

BASE_STAND_IN = "smollm2-135m-instruct"   # an instruct model with a chat template: the small base a team fine-tunes
BASELINE_STAND_IN = "gemma-3-270m"        # twice larger, of another family, and a base model: no chat template
STAND_IN_MAX_LEN = {BASE_STAND_IN: 8192, BASELINE_STAND_IN: 32768}  # their configs' max_position_embeddings
DEFAULT_SAMPLE = 24                       # test examples per task when the manifest asks for no more
# A few optimizer steps on a few short batches: the launcher, the strategy, the gathering and saving of the adapter
# and its lineage all run, in about a minute on 2 cores; what the adapter learns is beside the point.
FINETUNE_ROWS = 64
FINETUNE_BATCH = 2
FINETUNE_STEPS = 4
FINETUNE_PROCESSES = 2
# At the suite's rate (2e-4, warmed up and decaying) four steps barely move the adapter: the stand-in then answered
# the adapter probe's prompts as its base did in some rehearsals, and the probe rightly stopped the run. At this
# rate, constant, the adapter changes its answers, so the probe checks that it is applied, as on GPUs.
FINETUNE_LEARNING_RATE = 2e-3


@dataclass(frozen=True)
class Rehearsal:
    suite: Suite
    notes: list[str]


def rehearse(suite: Suite, sample: int | None, min_examples: int | None) -> Rehearsal:
    """The suite as this CPU runs it, and what changed. `sample`: test examples per task (default: the manifest's
    `min_examples`, so every criterion can be decided, else DEFAULT_SAMPLE)."""
    trained = {c.model for c in suite.candidates if c.finetune is not None or c.adapter is not None}
    base_models = trained or {suite.candidates[0].model}
    cores = len(os.sched_getaffinity(0))
    notes: list[str] = []
    candidates = [_candidate(c, i, c.model in base_models, cores, notes) for i, c in enumerate(suite.candidates)]
    per_task = sample or max(min_examples or 0, DEFAULT_SAMPLE)
    why = "" if sample else " (the manifest's min_examples; --sample changes it)" if per_task != DEFAULT_SAMPLE else ""
    notes.append(f"tasks: a seeded sample of at most {per_task} test examples each{why}")
    return Rehearsal(sampled(suite.model_copy(update={"candidates": candidates}), per_task), notes)


def sampled(suite: Suite, per_task: int) -> Suite:
    """Every task cut to a seeded sample of at most `per_task` test examples (`--sample`), stratified by label as a
    task's own `sample:` is; a task already smaller is left as it is."""
    return suite.model_copy(update={"tasks": [_task(t, per_task) for t in suite.tasks]})


def _task(ref: TaskRef, per_task: int) -> TaskRef:
    if (ref.limit is not None and ref.limit <= per_task) or (ref.sample is not None and ref.sample <= per_task):
        return ref
    return ref.model_copy(update={"sample": per_task, "limit": None})


def _candidate(cand: Candidate, index: int, is_base: bool, cores: int, notes: list[str]) -> Candidate:
    where = f"candidates.{index} ({cand.name})"
    stand_in = BASE_STAND_IN if is_base else BASELINE_STAND_IN
    if cand.adapter is not None and cand.finetune is None:
        raise HarnessError(f"--rehearse: {where}.adapter: an adapter of {cand.model} cannot load on its stand-in "
                           f"{stand_in}; give the candidate a `finetune:` block so the rehearsal trains its own")
    notes.append(f"{where}: {cand.model} → {stand_in}")
    update: dict[str, object] = {"model": stand_in, "options": _options(cand, where, stand_in, cores, notes)}
    if cand.finetune is not None:
        update["finetune"] = _finetune(cand.finetune, where, notes)
    return cand.model_copy(update=update)


def _options(cand: Candidate, where: str, stand_in: str, cores: int, notes: list[str]) -> object:
    options = cand.options
    if not isinstance(options, ClientOptions):  # in process (transformers): the stand-in loads the same way
        return options
    endpoint = options.endpoint
    if stand_in == BASELINE_STAND_IN and endpoint == "chat":
        endpoint = "completions"
        notes.append(f"{where}: the chat endpoint → completions (the plain prompt): {stand_in} has no chat template")
    if not isinstance(options, VllmOptions):
        notes.append(f"{where}: backend {options.backend} → vllm, a server this rehearsal starts")
        return VllmOptions(endpoint=endpoint, concurrency=options.concurrency)
    return options.model_copy(update={"endpoint": endpoint,
                                      "serve": _serve(options.serve, where, stand_in, cores, notes)})


def _serve(serve: ServeSpec, where: str, stand_in: str, cores: int, notes: list[str]) -> ServeSpec:
    update: dict[str, object] = {"devices": [], "dtype": "auto"}
    if serve.devices:
        notes.append(f"{where}: serve.devices {serve.devices} → this CPU")
    if serve.dtype != "auto":
        notes.append(f"{where}: serve.dtype {serve.dtype} → what this CPU computes natively")
    tensor = min(serve.tensor_parallel_size, cores)
    if tensor != serve.tensor_parallel_size:
        notes.append(f"{where}: serve.tensor_parallel_size {serve.tensor_parallel_size} → {tensor} on vLLM's CPU "
                     f"backend (one rank per core, {cores} here)")
    update["tensor_parallel_size"] = tensor
    if serve.pipeline_parallel_size > 1:
        update["pipeline_parallel_size"] = 1
        notes.append(f"{where}: serve.pipeline_parallel_size {serve.pipeline_parallel_size} → 1 (not rehearsed: "
                     "the stand-in's few layers, and the cores go to tensor parallelism)")
    if serve.max_model_len and serve.max_model_len > STAND_IN_MAX_LEN[stand_in]:
        update["max_model_len"] = STAND_IN_MAX_LEN[stand_in]
        notes.append(f"{where}: serve.max_model_len {serve.max_model_len} → {STAND_IN_MAX_LEN[stand_in]}, "
                     f"{stand_in}'s longest")
    if serve.replicas > 1:
        notes.append(f"{where}: {serve.replicas} data-parallel replicas, each its own vLLM process, as on GPUs")
    return serve.model_copy(update=update)


def _finetune(spec: FinetuneSpec, where: str, notes: list[str]) -> FinetuneSpec:
    processes = min(spec.distributed.processes, FINETUNE_PROCESSES)
    launcher = (f"torchrun, {processes} CPU processes (gloo), {spec.distributed.strategy}" if processes > 1
                else "one process")
    notes.append(f"{where}: fine-tune on {launcher}: {FINETUNE_STEPS} steps of {FINETUNE_BATCH} rows per process "
                 f"from {FINETUNE_ROWS} training rows at a constant learning rate of {FINETUNE_LEARNING_RATE:g} "
                 f"(the suite asks {spec.distributed.processes} process(es), batch {spec.batch_size}, "
                 f"{spec.learning_rate:g} {spec.scheduler})")
    return spec.model_copy(update={
        "limit": min(spec.limit or FINETUNE_ROWS, FINETUNE_ROWS), "batch_size": FINETUNE_BATCH,
        "gradient_accumulation": 1, "max_steps": FINETUNE_STEPS, "eval_steps": FINETUNE_STEPS,
        "learning_rate": FINETUNE_LEARNING_RATE, "scheduler": "constant", "warmup_ratio": 0.0,
        "precision": "auto", "distributed": spec.distributed.model_copy(update={"processes": processes})})
