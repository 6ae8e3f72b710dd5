"""Multi-process fine-tuning saves what it trained: DDP and FSDP on two CPU processes (torchrun, gloo) give the
adapter that one process gives for the same optimizer steps on the same global batches, and the launcher keeps an
adapter only when its lineage shows every process asked doing the same, non-zero work."""

import json

import pytest

from harness.config import Candidate, FinetuneSpec, load_task
from harness.data import load_task_data
from harness.errors import HarnessError
from harness.finetune import finetune_candidate
from harness.finetune_torchrun import rank_problem, torchrun_command
from harness.store import LINEAGE_FILE
from tests.conftest import classification_task

# 32 training rows, no validation, no dropout (its masks are drawn per process), a constant learning rate.
SETTINGS = {"task": "keywords", "max_steps": 4, "learning_rate": 3e-3, "scheduler": "constant",
            "validation_fraction": 0, "dropout": 0}
RUNS = {
    "single": {"batch_size": 4},
    "ddp": {"batch_size": 2, "distributed": {"processes": 2, "strategy": "ddp"}},
    "fsdp": {"batch_size": 2, "distributed": {"processes": 2, "strategy": "fsdp", "fsdp_wrap": "LlamaDecoderLayer"}},
}


def _keywords(root):
    task = load_task(str(classification_task(root, n_test=12, n_train=32)))
    return task, load_task_data(task)


def _weights(adapter):
    from safetensors.torch import load_file

    return load_file(str(adapter / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def adapters(talking_model, tmp_path_factory):
    """The same 4 optimizer steps on the same global batches of 4 rows, three ways: one process with 4 rows a step,
    and two torchrun processes with 2 rows each, under DDP and under FSDP.

    The data order is the same for all three, by construction rather than by luck. The Trainer draws batches with
    its length-grouped sampler, whose order depends on its batch size (the per-process one): a seeded permutation
    cut into megabatches of min(rows // (4 × batch), 50) × batch rows, each sorted by length. With 32 rows that is
    4 × 2 = 8 rows for batch 2 and 2 × 4 = 8 for batch 4, so the order is the same; accelerate then hands rank r
    the sampler's batches r, r + 2, …, so step k of the two processes covers the rows that step k of the single
    one does. Only the padding differs (each process pads its own 2 rows), hence a float tolerance, not equality.
    """
    root = tmp_path_factory.mktemp("torchrun")
    task, data = _keywords(root / "task")
    made = {}
    for name, extra in RUNS.items():
        cand = Candidate(name=name, model=str(talking_model), finetune=FinetuneSpec(**SETTINGS, **extra))
        made[name] = finetune_candidate(cand, task, data.train, data.labels, talking_model, root / "adapters",
                                        say=print)
    assert not list((root / "adapters").glob(".*")), "no work folder, job file or log left behind"
    return made


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_the_two_process_adapter_is_whole_trained_and_loads(adapters, talking_model, strategy):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    single, ours = _weights(adapters["single"]), _weights(adapters[strategy])
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in single.items()}
    assert all(v.abs().max() > 0 for k, v in ours.items() if "lora_B" in k), "every LoRA B trained away from 0"
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(talking_model), adapters[strategy])
    loaded = {k.replace(".default", ""): v for k, v in model.state_dict().items() if "lora_" in k}
    assert loaded.keys() == ours.keys()
    for key, value in ours.items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)


@pytest.mark.slow
def test_sharding_does_not_change_the_adapter_and_one_process_gives_the_same(adapters):
    import torch

    single, ddp, fsdp = (_weights(adapters[name]) for name in ("single", "ddp", "fsdp"))
    for key in single:
        torch.testing.assert_close(fsdp[key], ddp[key], rtol=0, atol=1e-6)
        # 4 Adam steps of 3e-3 move a LoRA B by about 1e-2; another data order moves it by about as much.
        torch.testing.assert_close(ddp[key], single[key], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_the_lineage_records_the_world_size_and_every_rank_s_work(adapters, strategy):
    lineage = json.loads((adapters[strategy] / LINEAGE_FILE).read_text())
    assert lineage["steps"] == 4 and lineage["n_train"] == 32
    assert lineage["distributed"] == {
        "world_size": 2, "strategy": strategy, "backend": "gloo", "sharded": strategy == "fsdp",
        "ranks": [{"rank": rank, "optimizer_steps": 4, "examples": 8, "answer_tokens": 16} for rank in (0, 1)]}
    assert "distributed" not in json.loads((adapters["single"] / LINEAGE_FILE).read_text())


@pytest.mark.slow
def test_a_launch_that_runs_fewer_processes_than_asked_keeps_no_adapter(tmp_path, talking_model, monkeypatch):
    """torchrun told 1 process where the suite asks 2: the training succeeds, the lineage says world size 1."""
    import harness.finetune_torchrun as torchrun

    monkeypatch.setattr(torchrun, "torchrun_command", lambda spec, job: [
        arg.replace("--nproc_per_node=2", "--nproc_per_node=1") for arg in torchrun_command(spec, job)])
    task, data = _keywords(tmp_path / "task")
    spec = FinetuneSpec(**SETTINGS, batch_size=2, distributed={"processes": 2})
    cand = Candidate(name="short", model=str(talking_model), finetune=spec)
    with pytest.raises(HarnessError, match=r"the 2-process training is refused, no adapter kept: its lineage "
                                           r"records 1 process\(es\) training, not the 2 asked \(log "):
        finetune_candidate(cand, task, data.train, data.labels, talking_model, tmp_path / "adapters")
    assert not [p for p in (tmp_path / "adapters").iterdir() if not p.name.startswith(".")]


def _lineage(world_size=2, steps=(4, 4), examples=(8, 8), sharded=False):
    ranks = [{"rank": r, "optimizer_steps": s, "examples": e}
             for r, (s, e) in enumerate(zip(steps, examples, strict=True))]
    return {"distributed": {"world_size": world_size, "sharded": sharded, "ranks": ranks}}


@pytest.mark.parametrize(("lineage", "strategy", "problem"), [
    (_lineage(), "ddp", None),
    (_lineage(sharded=True), "fsdp", None),
    ({}, "ddp", "its lineage records no process(es) training, not the 2 asked"),
    (_lineage(world_size=1, steps=(4,), examples=(8,)), "ddp", "records 1 process(es) training, not the 2 asked"),
    (_lineage(steps=(4, 0)), "ddp", "rank(s) 1 did no training work"),
    (_lineage(examples=(0, 8)), "ddp", "rank(s) 0 did no training work"),
    (_lineage(steps=(4, 3)), "ddp", "the ranks took different numbers of optimizer steps (4, 3)"),
    (_lineage(), "fsdp", "strategy fsdp, yet its lineage says the model was not sharded"),
])
def test_rank_problem(lineage, strategy, problem):
    spec = FinetuneSpec(task="t", distributed={"processes": 2, "strategy": strategy})
    found = rank_problem(lineage, spec)
    assert found == problem if problem is None else problem in found


def test_the_launcher_refuses_an_adapter_whose_rank_did_no_work(tmp_path, monkeypatch):
    """torchrun stood in for by a process that 'trains' an adapter whose lineage says rank 1 took no step."""
    import sys

    import harness.finetune_torchrun as torchrun
    from harness.adapter_lineage import TrainingSet

    target = tmp_path / "adapters" / "idle-0123"
    script = (f"import json, pathlib; t = pathlib.Path({str(target)!r}); t.mkdir(parents=True); "
              f"(t / {LINEAGE_FILE!r}).write_text({json.dumps(_lineage(steps=(4, 0)))!r}); print('training done')")
    monkeypatch.setattr(torchrun, "torchrun_command", lambda spec, job: [sys.executable, "-c", script])
    task = load_task(str(classification_task(tmp_path / "task")))
    spec = FinetuneSpec(task="keywords", distributed={"processes": 2})
    with pytest.raises(HarnessError, match=r"^finetune idle: the 2-process training is refused, no adapter kept: "
                                           r"rank\(s\) 1 did no training work \(log .*\.idle-torchrun\.log\)$"):
        torchrun.launch(tmp_path, TrainingSet(task, [], [], None), spec, tmp_path / "adapters", "idle", False, "x",
                        target, print, None)
    assert not target.exists() and (tmp_path / "adapters" / ".idle-torchrun.log").is_file()
