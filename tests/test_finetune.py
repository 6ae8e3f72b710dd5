"""LoRA training for real on the tiny local model: validation loss goes down, the adapter is reused by
hash, it loads in the in-process backend, named as `adapter:` elsewhere it is asked as it was trained, and bad
settings are clear errors; the retraining loop's gate gives the verdicts its construction implies."""

import json

import pytest
import yaml

from harness.config import Candidate, FinetuneSpec, load_task
from harness.data import load_task_data
from harness.errors import HarnessError
from harness.finetune import finetune_candidate
from harness.models import native_dtype
from harness.plan import make_plan
from harness.store import LINEAGE_FILE as LINEAGE
from harness.store import RunDir
from tests.conftest import classification_task, qa_task, write_yaml

pytestmark = pytest.mark.slow
SPEC = {"task": "keywords", "max_steps": 60, "eval_steps": 20, "learning_rate": 3e-3, "scheduler": "constant",
        "batch_size": 8}


def _task(tmp_path):
    task = load_task(str(classification_task(tmp_path / "task", n_test=12, n_train=200)))
    return task, load_task_data(task)


def test_training_lowers_validation_loss_and_is_reused(tmp_path, talking_model):
    task, data = _task(tmp_path)
    cand = Candidate(name="ft", model=str(talking_model), finetune=FinetuneSpec(**SPEC))
    path = finetune_candidate(cand, task, data.train, data.labels, talking_model, tmp_path / "adapters")
    lineage = json.loads((path / LINEAGE).read_text())
    losses = [p["loss"] for p in lineage["validation_loss"]]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert 0 < lineage["trainable_share"] < 0.2 and lineage["n_validation"] == 20
    assert lineage["base_sha256"] and lineage["train_sha256"] and lineage["config"]["rank"] == 8
    assert (path / "adapter_config.json").is_file() and path.name.startswith("ft-")
    stamp = (path / "adapter_model.safetensors").stat().st_mtime_ns
    again = finetune_candidate(cand, task, data.train, data.labels, talking_model, tmp_path / "adapters")
    assert again == path and (path / "adapter_model.safetensors").stat().st_mtime_ns == stamp
    changed = Candidate(name="ft", model=str(talking_model), finetune=FinetuneSpec(**{**SPEC, "rank": 4}))
    assert finetune_candidate(changed, task, data.train, data.labels, talking_model, tmp_path / "adapters") != path
    assert not list((tmp_path / "adapters").glob(".*")), "no temporary folder left behind"


@pytest.mark.parametrize(("change", "message"), [
    ({"target_modules": ["nope_proj"]}, "target module(s) ['nope_proj'] not in the model"),
    ({"max_seq_len": 100000}, "exceeds the model's 2048"),
    ({"last_layers": 999}, "last_layers 999 exceeds the model's"),
])
def test_bad_settings(tmp_path, talking_model, change, message):
    task, data = _task(tmp_path)
    cand = Candidate(name="ft", model=str(talking_model), finetune=FinetuneSpec(**{**SPEC, **change}))
    with pytest.raises(HarnessError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        finetune_candidate(cand, task, data.train, data.labels, talking_model, tmp_path / "adapters")


def test_last_layers_puts_lora_on_the_top_layers_only(tmp_path, talking_model):
    """The cheaper recipe: LoRA weights exist in the last N layers and nowhere below."""
    import re

    from safetensors import safe_open
    from transformers import AutoConfig

    task, data = _task(tmp_path)
    n_layers = AutoConfig.from_pretrained(talking_model).num_hidden_layers
    assert n_layers >= 2, "the test needs layers below the trained one"
    cand = Candidate(name="ft", model=str(talking_model),
                     finetune=FinetuneSpec(**{**SPEC, "max_steps": 3, "last_layers": 1}))
    path = finetune_candidate(cand, task, data.train, data.labels, talking_model, tmp_path / "adapters")
    with safe_open(str(path / "adapter_model.safetensors"), "pt") as weights:
        keys = list(weights.keys())
    assert keys and {int(re.search(r"layers\.(\d+)\.", k).group(1)) for k in keys} == {n_layers - 1}


def test_an_empty_training_split_is_refused(tmp_path, talking_model):
    task, data = _task(tmp_path)
    cand = Candidate(name="ft", model=str(talking_model), finetune=FinetuneSpec(**SPEC))
    with pytest.raises(HarnessError, match="finetune ft: task keywords has no training examples"):
        finetune_candidate(cand, task, [], data.labels, talking_model, tmp_path / "adapters")


def test_run_trains_then_scores_the_finetune_next_to_its_base(tmp_path, talking_model, monkeypatch, capsys):
    from tests.test_cli import run_cli

    task = classification_task(tmp_path / "task", n_test=9, n_train=120)
    other = qa_task(tmp_path / "qa", n=8)
    # The fine-tune is scored on its own task only, with a prompt that leaves the label list out and no chat template.
    suite = write_yaml(tmp_path / "suite.yaml", {
        "name": "ft", "allow_overlap": True, "tasks": [str(task), str(other)],
        "candidates": [{"name": "base", "model": str(talking_model)},
                       {"name": "tuned", "model": str(talking_model), "finetune": SPEC, "tasks": ["keywords"],
                        "chat": False, "prompts": {"keywords": {"system": "Pick a label."}}}],
        "bootstrap": {"resamples": 100}})
    monkeypatch.setenv("HARNESS_ADAPTERS", str(tmp_path / "store"))
    code, _ = run_cli(monkeypatch, capsys, "finetune", str(suite))
    assert code == 0
    (adapter,) = (tmp_path / "store").iterdir()
    code, _ = run_cli(monkeypatch, capsys, "run", str(suite), "--results", str(tmp_path / "r"), "--run-id", "x")
    assert code == 0
    record = json.loads((tmp_path / "r" / "x" / "run.json").read_text())
    assert record["adapters"] == {"tuned": str(adapter)}, "the run reuses the adapter `harness finetune` made"
    # each stage's seconds and dtype: training (reused here) in the adapter's own dtype, generation in the native one
    assert "tuned/finetune" in record["timings_s"] and "tuned/keywords" in record["timings_s"]
    assert record["dtypes"]["tuned/finetune"] == json.loads((adapter / LINEAGE).read_text())["dtype"]
    assert record["dtypes"]["tuned/generate"] == record["dtypes"]["base/generate"] == native_dtype()
    assert (tmp_path / "r" / "x" / "predictions" / "tuned" / "keywords.jsonl").is_file()
    assert not (tmp_path / "r" / "x" / "predictions" / "tuned" / "qa.jsonl").exists()
    trained = json.loads((adapter / LINEAGE).read_text())
    assert trained["prompt"]["system"] == "Pick a label." and trained["chat"] is False and trained["task"] == "keywords"
    scored = {(m["task"], m["candidate"]) for m in json.loads((tmp_path / "r" / "x" / "metrics.json").read_text())}
    assert scored == {("keywords", "base"), ("keywords", "tuned"), ("qa", "base")}
    assert record["prompting"]["tuned"]["keywords"]["prompt"] == "suite", "trained here on the suite's own prompt"

    # Named as `adapter:` in another suite, it is asked as it was trained, so it answers as it did in this run;
    # a suite that gives the task's prompt itself is obeyed.
    elsewhere = write_yaml(tmp_path / "elsewhere.yaml", {
        "name": "elsewhere", "allow_overlap": True, "tasks": [str(task)],
        "candidates": [{"name": "named", "model": str(talking_model), "adapter": str(adapter)},
                       {"name": "overridden", "model": str(talking_model), "adapter": str(adapter),
                        "prompts": {"keywords": {"system": "Pick one of: {labels}"}}}],
        "bootstrap": {"resamples": 100}})
    here, there = make_plan(suite), make_plan(elsewhere)
    assert there.requests(there.tasks[0], there.suite.candidate("named")) == \
        here.requests(here.tasks[0], here.suite.candidate("tuned")), "the prompts it was trained and scored on"
    assert there.suite.candidate("named").options.chat is False
    code, err = run_cli(monkeypatch, capsys, "run", str(elsewhere), "--results", str(tmp_path / "r"), "--run-id", "e")
    assert code == 0, err
    assert "named × keywords: prompt from the lineage, chat template from the lineage" in " ".join(err.split())
    prompting = json.loads((tmp_path / "r" / "e" / "run.json").read_text())["prompting"]
    assert {c: (p["keywords"]["prompt"], p["keywords"]["chat"]) for c, p in prompting.items()} == {
        "named": ("lineage", "lineage"), "overridden": ("suite", "lineage")}

    def answers(run_id, cand):
        return {c.example_id: c.text for c in RunDir(tmp_path / "r" / run_id).read_predictions(cand, "keywords")}

    assert answers("e", "named") == answers("x", "tuned")

    data = yaml.safe_load(suite.read_text())
    suite.write_text(yaml.safe_dump({**data, "allow_overlap": False}))
    code, err = run_cli(monkeypatch, capsys, "run", str(suite), "--results", str(tmp_path / "r"), "--run-id", "y")
    assert code == 2 and "blocks training" in err and not (tmp_path / "r" / "y").exists()

    # Decontaminating drops the overlapping rows, so training may go ahead on what is left.
    data = yaml.safe_load(suite.read_text())
    data["candidates"][1]["finetune"] = {**SPEC, "decontaminate": True, "max_steps": 5}
    suite.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("HARNESS_ADAPTERS", str(tmp_path / "clean"))
    code, err = run_cli(monkeypatch, capsys, "finetune", str(suite))
    assert code == 0, err
    (clean,) = (tmp_path / "clean").iterdir()
    lineage = json.loads((clean / LINEAGE).read_text())
    assert lineage["n_train"] + lineage["n_validation"] < 120


def test_two_process_training_through_torchrun(tmp_path, talking_model):
    """Data-parallel training on two CPU processes (gloo): the path a multi-GPU fine-tune takes."""
    task, data = _task(tmp_path)
    spec = FinetuneSpec(**{**SPEC, "max_steps": 20, "eval_steps": 10, "distributed": {"processes": 2}})
    cand = Candidate(name="ddp", model=str(talking_model), finetune=spec)
    path = finetune_candidate(cand, task, data.train, data.labels, talking_model, tmp_path / "adapters", say=print)
    lineage = json.loads((path / LINEAGE).read_text())
    assert lineage["config"]["distributed"]["processes"] == 2 and lineage["steps"] == 20
    assert lineage["distributed"]["world_size"] == 2 and lineage["distributed"]["strategy"] == "ddp"
    assert [r["optimizer_steps"] for r in lineage["distributed"]["ranks"]] == [20, 20]
    assert len(lineage["validation_loss"]) == 2 and (path / "adapter_model.safetensors").is_file()
    assert not list((tmp_path / "adapters").glob(".*")), "no work folder, job file or log left behind"


def test_failed_distributed_training_is_one_clear_error(tmp_path, talking_model):
    task, data = _task(tmp_path)
    spec = FinetuneSpec(**{**SPEC, "target_modules": ["nope_proj"], "distributed": {"processes": 2}})
    cand = Candidate(name="bad", model=str(talking_model), finetune=spec)
    with pytest.raises(HarnessError, match=r"distributed training failed \(exit [1-9].*not in the model"):
        finetune_candidate(cand, task, data.train, data.labels, talking_model, tmp_path / "adapters", say=print)


def _lora_b(adapter):
    from safetensors.torch import load_file

    weights = load_file(str(adapter / "adapter_model.safetensors"))
    return {k: v for k, v in weights.items() if "lora_B" in k}


def test_the_retraining_loop_monitor_rows_train_a_successor_that_is_gated(tmp_path, talking_model, monkeypatch, capsys):
    """Labelled traffic exported by `harness monitor` joins the training data of a successor that continues
    the deployed adapter; its lineage names the parent; the suite gates successor against deployed."""
    import torch

    from tests.helpers import traffic_log
    from tests.test_cli import run_cli

    task = classification_task(tmp_path / "task", n_test=9, n_train=120)
    texts = [f"my parcel tracking code {i} is wrong" for i in range(30)] + ["question 1 about my parcel"]
    log = traffic_log(tmp_path / "traffic.jsonl", texts, ["billing"] * 31, references=["delivery"] * 31)
    deployed = {**SPEC, "max_steps": 20}
    suite = write_yaml(tmp_path / "suite.yaml", {
        "name": "loop", "allow_overlap": True, "tasks": [str(task)],
        "candidates": [{"name": "deployed", "model": str(talking_model), "finetune": deployed},
                       {"name": "successor", "model": str(talking_model),
                        "finetune": {**SPEC, "max_steps": 1, "learning_rate": 1e-7, "parent": "deployed",
                                     "extra_train": ["new_rows.csv"], "decontaminate": True}}],
        # The successor is the deployed adapter after one step at a negligible rate (checked below), so it answers
        # as the deployed one does: it cannot be worse by half the test set, nor better by half.
        "manifest": {"criteria": [{"task": "keywords", "metric": "invalid_label_rate", "candidate": "successor",
                                   "not_worse_than": "deployed", "margin": 0.5},
                                  {"task": "keywords", "metric": "accuracy", "candidate": "successor",
                                   "better_than": "deployed", "by": 0.5}],
                     "monitor": {"min_rows": 1, "resamples": 200}},
        "bootstrap": {"resamples": 100}})
    monkeypatch.setenv("HARNESS_ADAPTERS", str(tmp_path / "store"))
    code, err = run_cli(monkeypatch, capsys, "finetune", str(suite))
    assert code == 2 and "candidates.1.finetune.extra_train.0: data file not found" in err
    code, _ = run_cli(monkeypatch, capsys, "monitor", str(log), "--against", str(suite), "--export-labelled",
                      str(tmp_path / "new_rows.csv"), "--results", str(tmp_path / "r"))
    assert code in (0, 1)
    code, err = run_cli(monkeypatch, capsys, "finetune", str(suite), "--candidate", "successor")
    assert code == 0, err
    # The one exported row that is also a test message is dropped (decontaminate), the thirty others kept.
    said = " ".join(err.split())
    dropped = int(said.split("successor: dropped ")[1].split()[0])  # task rows that are also test rows
    assert "successor: 30 extra training rows (0 already in the training split and 1 in the test split" in said
    adapters = {p.name.split("-")[0]: p for p in (tmp_path / "store").iterdir()}
    parent, child = adapters["deployed"], adapters["successor"]
    lineage = json.loads((child / LINEAGE).read_text())
    assert lineage["parent"]["adapter"] == str(parent) and lineage["generation"] == 2
    assert lineage["parent"]["adapter_key"] == json.loads((parent / LINEAGE).read_text())["adapter_key"]
    assert lineage["n_train"] + lineage["n_validation"] == 120 - dropped + 30
    # It continued the parent's weights (one step at a tiny rate), not a fresh LoRA (B = 0 at the start).
    before, after = _lora_b(parent), _lora_b(child)
    assert before.keys() == after.keys()
    assert all(before[k].abs().max() > 1e-3 and torch.allclose(before[k], after[k], atol=1e-4) for k in before)
    code, _ = run_cli(monkeypatch, capsys, "run", str(suite), "--results", str(tmp_path / "r"), "--run-id", "gate")
    verdict = json.loads((tmp_path / "r" / "gate" / "verdict.json").read_text())
    assert [(c["criterion"], c["status"]) for c in verdict["criteria"]] == [
        ("keywords invalid_label_rate of successor not worse than deployed by more than 0.5", "pass"),
        ("keywords accuracy of successor better than deployed by 0.5", "fail")]
    assert code == 1, "one criterion failed, so the gate fails"


@pytest.mark.parametrize(("change", "field", "message"), [
    ({"parent": "successor"}, "candidates.1.finetune.parent", "a fine-tune cannot continue itself"),
    ({"parent": "later"}, "candidates.1.finetune.parent", "candidate later is trained after this one"),
    ({"parent": "no/such/folder"}, "candidates.1.finetune.parent", "not a LoRA adapter directory"),
    ({"extra_train": ["bad_labels.csv"]}, "candidates.1.finetune.extra_train.0", "labels not in task keywords: refund"),
    ({"extra_train": ["wrong_columns.csv"]}, "candidates.1.finetune.extra_train.0", "column 'text' not in"),
])
def test_a_successor_that_cannot_be_trained_is_refused_before_any_work(tmp_path, talking_model, change, field, message):
    from harness.errors import ConfigError

    task = classification_task(tmp_path / "task", n_test=9, n_train=30)
    (tmp_path / "bad_labels.csv").write_text("text,label\nmy money back,refund\n")
    (tmp_path / "wrong_columns.csv").write_text("message,label\nmy money back,billing\n")
    suite = write_yaml(tmp_path / "suite.yaml", {
        "name": "loop", "allow_overlap": True, "tasks": [str(task)],
        "candidates": [{"name": "deployed", "model": str(talking_model), "finetune": SPEC},
                       {"name": "successor", "model": str(talking_model), "finetune": {**SPEC, **change}},
                       {"name": "later", "model": str(talking_model), "finetune": SPEC}]})
    with pytest.raises(ConfigError) as caught:
        make_plan(suite)
    assert caught.value.field == field and message in caught.value.message


def test_a_run_into_another_results_folder_reuses_the_trained_adapter(tmp_path, talking_model, monkeypatch):
    from harness.pipeline import run_suite

    monkeypatch.setenv("HARNESS_ADAPTERS", str(tmp_path / "store"))
    task = classification_task(tmp_path / "task", n_test=6, n_train=40)
    suite = write_yaml(tmp_path / "suite.yaml", {
        "name": "ft", "tasks": [str(task)], "bootstrap": {"resamples": 100}, "allow_overlap": True,
        "candidates": [{"name": "ft", "model": str(talking_model), "accept_unchanged_adapter": True,
                        "finetune": {**SPEC, "max_steps": 4, "eval_steps": 2}}]})
    first = run_suite(suite, tmp_path / "one", run_id="a")
    adapter = tmp_path / "store" / RunDir(first.run_dir).read_run().adapters["ft"].split("/")[-1]
    assert RunDir(first.run_dir).read_run().adapters["ft"] == str(adapter) and adapter.is_dir()
    stamp = (adapter / "adapter_model.safetensors").stat().st_mtime_ns
    second = run_suite(suite, tmp_path / "two", run_id="b")
    assert RunDir(second.run_dir).read_run().adapters["ft"] == str(adapter)
    assert (adapter / "adapter_model.safetensors").stat().st_mtime_ns == stamp, "not trained again"
