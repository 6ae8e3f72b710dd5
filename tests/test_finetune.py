"""LoRA training for real on the tiny local model: validation loss goes down, the adapter is reused by
hash, it loads in the in-process backend, and bad settings are clear errors."""

import json

import pytest
import yaml

from harness.config import Candidate, FinetuneSpec, load_task
from harness.data import load_task_data
from harness.errors import HarnessError
from harness.finetune import finetune_candidate
from harness.store import LINEAGE_FILE as LINEAGE
from tests.conftest import classification_task, qa_task, write_yaml

pytestmark = pytest.mark.slow
SPEC = {"task": "keywords", "max_steps": 60, "eval_steps": 20, "learning_rate": 3e-3, "scheduler": "constant",
        "batch_size": 8}


def _task(tmp_path):
    task = load_task(str(classification_task(tmp_path / "task", n_test=12, n_train=200)))
    return task, load_task_data(task)


def test_training_lowers_validation_loss_and_is_reused(tmp_path, tiny_model):
    task, data = _task(tmp_path)
    cand = Candidate(name="ft", model=str(tiny_model), finetune=FinetuneSpec(**SPEC))
    path = finetune_candidate(cand, task, data.train, data.labels, tiny_model, tmp_path / "adapters")
    lineage = json.loads((path / LINEAGE).read_text())
    losses = [p["loss"] for p in lineage["validation_loss"]]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert 0 < lineage["trainable_share"] < 0.2 and lineage["n_validation"] == 20
    assert lineage["base_sha256"] and lineage["train_sha256"] and lineage["config"]["rank"] == 8
    assert (path / "adapter_config.json").is_file() and path.name.startswith("ft-")
    stamp = (path / "adapter_model.safetensors").stat().st_mtime_ns
    again = finetune_candidate(cand, task, data.train, data.labels, tiny_model, tmp_path / "adapters")
    assert again == path and (path / "adapter_model.safetensors").stat().st_mtime_ns == stamp
    changed = Candidate(name="ft", model=str(tiny_model), finetune=FinetuneSpec(**{**SPEC, "rank": 4}))
    assert finetune_candidate(changed, task, data.train, data.labels, tiny_model, tmp_path / "adapters") != path
    assert not list((tmp_path / "adapters").glob(".*")), "no temporary folder left behind"


@pytest.mark.parametrize(("change", "message"), [
    ({"target_modules": ["nope_proj"]}, "target module(s) ['nope_proj'] not in the model"),
    ({"max_seq_len": 100000}, "exceeds the model's 2048"),
])
def test_bad_settings(tmp_path, tiny_model, change, message):
    task, data = _task(tmp_path)
    cand = Candidate(name="ft", model=str(tiny_model), finetune=FinetuneSpec(**{**SPEC, **change}))
    with pytest.raises(HarnessError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        finetune_candidate(cand, task, data.train, data.labels, tiny_model, tmp_path / "adapters")


def test_an_empty_training_split_is_refused(tmp_path, tiny_model):
    task, data = _task(tmp_path)
    cand = Candidate(name="ft", model=str(tiny_model), finetune=FinetuneSpec(**SPEC))
    with pytest.raises(HarnessError, match="finetune ft: task keywords has no training examples"):
        finetune_candidate(cand, task, [], data.labels, tiny_model, tmp_path / "adapters")


def test_run_trains_then_scores_the_finetune_next_to_its_base(tmp_path, tiny_model, monkeypatch, capsys):
    from tests.test_cli import run_cli

    task = classification_task(tmp_path / "task", n_test=9, n_train=120)
    other = qa_task(tmp_path / "qa", n=8)
    # The fine-tune is scored on its own task only, with a prompt that leaves the label list out.
    suite = write_yaml(tmp_path / "suite.yaml", {
        "name": "ft", "allow_overlap": True, "tasks": [str(task), str(other)],
        "candidates": [{"name": "base", "model": str(tiny_model)},
                       {"name": "tuned", "model": str(tiny_model), "finetune": SPEC, "tasks": ["keywords"],
                        "prompts": {"keywords": {"system": "Pick a label."}}}],
        "bootstrap": {"resamples": 100}})
    code, _ = run_cli(monkeypatch, capsys, "finetune", str(suite), "--results", str(tmp_path / "r"))
    assert code == 0
    (adapter,) = (tmp_path / "r" / "adapters").iterdir()
    code, _ = run_cli(monkeypatch, capsys, "run", str(suite), "--results", str(tmp_path / "r"), "--run-id", "x")
    assert code == 0
    record = json.loads((tmp_path / "r" / "x" / "run.json").read_text())
    assert record["adapters"] == {"tuned": str(adapter)}, "the run reuses the adapter `harness finetune` made"
    assert (tmp_path / "r" / "x" / "predictions" / "tuned" / "keywords.jsonl").is_file()
    assert not (tmp_path / "r" / "x" / "predictions" / "tuned" / "qa.jsonl").exists()
    assert json.loads((adapter / LINEAGE).read_text())["prompt"]["system"] == "Pick a label."
    scored = {(m["task"], m["candidate"]) for m in json.loads((tmp_path / "r" / "x" / "metrics.json").read_text())}
    assert scored == {("keywords", "base"), ("keywords", "tuned"), ("qa", "base")}

    data = yaml.safe_load(suite.read_text())
    suite.write_text(yaml.safe_dump({**data, "allow_overlap": False}))
    code, err = run_cli(monkeypatch, capsys, "run", str(suite), "--results", str(tmp_path / "r"), "--run-id", "y")
    assert code == 2 and "blocks training" in err and not (tmp_path / "r" / "y").exists()

    # Decontaminating drops the overlapping rows, so training may go ahead on what is left.
    data = yaml.safe_load(suite.read_text())
    data["candidates"][1]["finetune"] = {**SPEC, "decontaminate": True, "max_steps": 5}
    suite.write_text(yaml.safe_dump(data))
    code, err = run_cli(monkeypatch, capsys, "finetune", str(suite), "--results", str(tmp_path / "clean"))
    assert code == 0, err
    (clean,) = (tmp_path / "clean" / "adapters").iterdir()
    lineage = json.loads((clean / LINEAGE).read_text())
    assert lineage["n_train"] + lineage["n_validation"] < 120


def test_two_process_training_through_torchrun(tmp_path, tiny_model):
    """Data-parallel training on two CPU processes (gloo): the path a multi-GPU fine-tune takes."""
    task, data = _task(tmp_path)
    spec = FinetuneSpec(**{**SPEC, "max_steps": 20, "eval_steps": 10, "distributed": {"processes": 2}})
    cand = Candidate(name="ddp", model=str(tiny_model), finetune=spec)
    path = finetune_candidate(cand, task, data.train, data.labels, tiny_model, tmp_path / "adapters", say=print)
    lineage = json.loads((path / LINEAGE).read_text())
    assert lineage["config"]["distributed"]["processes"] == 2 and lineage["steps"] == 20
    assert len(lineage["validation_loss"]) == 2 and (path / "adapter_model.safetensors").is_file()
    assert not list((tmp_path / "adapters").glob(".*")), "no work folder, job file or log left behind"


def test_failed_distributed_training_is_one_clear_error(tmp_path, tiny_model):
    task, data = _task(tmp_path)
    spec = FinetuneSpec(**{**SPEC, "target_modules": ["nope_proj"], "distributed": {"processes": 2}})
    cand = Candidate(name="bad", model=str(tiny_model), finetune=spec)
    with pytest.raises(HarnessError, match=r"distributed training failed \(exit [1-9].*not in the model"):
        finetune_candidate(cand, task, data.train, data.labels, tiny_model, tmp_path / "adapters", say=print)
