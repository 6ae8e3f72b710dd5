"""`harness plan`: the flagship suite sized offline from the shipped shapes; every impossible layout refused as one
line naming the field, before any work (and by `harness run` on a GPU machine); the shapes' parameter counts
against their published figures; a model's own config.json preferred to the table."""

import json
import sys
from pathlib import Path

import pytest
import yaml

from harness import capacity
from harness.capacity.gpus import GPUS
from harness.capacity.memory import GIB, kv_per_token
from harness.capacity.shapes import ModelShape, shape_of, table
from harness.capacity.training import finetune_memory
from harness.cli import main
from harness.config import PROJECT_ROOT
from harness.errors import ConfigError
from harness.finetune_spec import FinetuneSpec
from harness.plan import make_plan
from harness.workload import capacity_plan
from tests.conftest import classification_task, write_yaml

FLAGSHIP = PROJECT_ROOT / "suites" / "llama-8b-vs-70b.yaml"
LLAMA_8B, LLAMA_70B = "meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-70B-Instruct"


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["harness", *args])
    with pytest.raises(SystemExit) as info:
        main()
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


@pytest.fixture
def no_hf_cache(monkeypatch, tmp_path):
    """An empty Hugging Face cache: shapes come from the shipped table, as on a machine that never downloaded."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return tmp_path / "hf-cache"


def test_the_flagship_suite_is_planned_offline(no_hf_cache):
    plan = capacity_plan(FLAGSHIP, GPUS["h100"])
    small, big = plan.servers
    assert small.server.candidates == ("llama-8b", "llama-8b-ft") and small.server.adapters == ("llama-8b-ft",)
    assert small.server.devices() == [(0,), (1,)] and big.server.devices() == [(2, 3, 4, 5)]
    assert {small.shape.source, big.shape.source} == {"shipped table"}
    # bf16 weights: the 8B ~16 GB on each of its GPUs, the 70B ~141 GB split over its four
    assert small.memory.weights == pytest.approx(16.06e9, rel=0.01)
    assert big.memory.weights * 4 == pytest.approx(141.1e9, rel=0.01)
    assert big.memory.kv_per_token == 2 * 80 * 2 * 128 * 2  # 8 KV heads over 4 GPUs, 80 layers, bf16
    assert all(p.memory.full_length_sequences >= p.server.sequences for p in plan.servers)
    # every candidate asks each of its tasks' test examples once: banking77, support-qa, legal-plain
    assert {g.candidate: g.requests for g in plan.generation} == dict.fromkeys(
        ("llama-8b", "llama-8b-ft", "llama-70b"), 3080 + 200 + 133)
    assert all(g.seconds and g.cost for g in plan.generation)
    (ft,) = plan.finetunes
    assert ft.candidate == "llama-8b-ft" and ft.memory.processes == 8
    assert ft.memory.total < GPUS["h100"].memory_gib * GIB
    assert plan.notes == []


def test_the_plan_command_prints_tables_and_json(monkeypatch, capsys, no_hf_cache):
    code, out, err = run_cli(monkeypatch, capsys, "plan", str(FLAGSHIP))
    assert code == 0 and err == ""
    for title in ("Servers of llama-8b-vs-70b", "Memory per GPU", "Fine-tunes", "estimated time and cost",
                  "How the figures are made"):
        assert title in out
    code, out, _ = run_cli(monkeypatch, capsys, "plan", str(FLAGSHIP), "--json", "--gpu", "a100-80gb")
    record = json.loads(out)
    assert code == 0 and record["gpu"]["name"] == "a100-80gb"
    assert [s["gpus"] for s in record["servers"]] == [[[0], [1]], [[2, 3, 4, 5]]]
    assert record["formulas"]["serving"]["kv_per_token"]


def _broken(tmp_path: Path, edit) -> Path:
    suite = yaml.safe_load(FLAGSHIP.read_text())
    edit({c["name"]: c for c in suite["candidates"]}, suite)
    return write_yaml(tmp_path / "suite.yaml", suite)


def _serve(name: str, **changes):
    return lambda cands, suite: cands[name]["serve"].update(changes)


def _drop_devices(cands, suite):
    for name in ("llama-8b", "llama-8b-ft"):
        del cands[name]["serve"]["devices"]


def _given_adapter(cands, suite):
    del cands["llama-8b-ft"]["finetune"]
    cands["llama-8b-ft"]["adapter"] = "results/adapters/llama-8b-ft"


BROKEN = {
    "shared devices": (_serve("llama-70b", devices=[1, 2, 3, 4]), "candidates.2.serve.devices",
                       "GPU 1, which candidates.0's (llama-8b) uses too; together they ask for 90% + 90%"),
    "a GPU listed twice": (_serve("llama-70b", devices=[2, 3, 3, 4]), "candidates.2.serve.devices",
                           "GPU 3 is listed twice"),
    "tensor size not dividing the heads": (
        _serve("llama-70b", tensor_parallel_size=3, devices=[2, 3, 4]), "candidates.2.serve.tensor_parallel_size",
        f"3 does not divide {LLAMA_70B}'s 64 attention heads (sizes that do: 1, 2, 4, 8, 16, 32, 64)"),
    "tensor size not dividing the KV heads": (
        lambda cands, suite: cands["llama-70b"].update(model="meta-llama/Llama-3.2-3B-Instruct", serve={
            "tensor_parallel_size": 6, "devices": [2, 3, 4, 5, 6, 7]}),
        "candidates.2.serve.tensor_parallel_size", "6 does not divide meta-llama/Llama-3.2-3B-Instruct's 8 KV heads"),
    "devices not tensor x pipeline x replicas": (
        _serve("llama-70b", devices=[2, 3, 4]), "candidates.2.serve",
        "`devices` lists 3 GPUs; tensor x pipeline x replicas needs 4"),
    "replicas without devices": (_drop_devices, "candidates.0.serve.replicas",
                                 "2 replicas with no `devices` all start on GPU 0, each asking for 90% of its memory"),
    "weights beyond a GPU": (_serve("llama-70b", tensor_parallel_size=1, devices=[2]),
                             "candidates.2.serve.tensor_parallel_size", "needs 131.4 GiB of weights per GPU"),
    "KV cache beyond a GPU": (_serve("llama-70b", tensor_parallel_size=2, devices=[2, 3], max_model_len=32768),
                              "candidates.2.serve.max_model_len", "one sequence of 32768 tokens needs 5.0 GiB"),
    "an adapter nothing trains": (_given_adapter, "candidates.1.adapter",
                                  "no candidate of this suite trains it"),
    "a model of unknown shape": (lambda cands, suite: cands["llama-70b"].update(model="acme/secret-65b"),
                                 "candidates.2.model", "`huggingface-cli download acme/secret-65b config.json`"),
}


@pytest.mark.parametrize("case", BROKEN, ids=list(BROKEN))
def test_an_impossible_layout_is_one_line_naming_the_field(monkeypatch, capsys, tmp_path, no_hf_cache, case):
    edit, field, message = BROKEN[case]
    suite = _broken(tmp_path, edit)
    code, out, err = run_cli(monkeypatch, capsys, "plan", str(suite))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"error: {suite}: {field}: ")
    assert message in err


def test_an_unknown_gpu_is_refused(monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "plan", str(FLAGSHIP), "--gpu", "tpu")
    assert code == 2 and "--gpu: unknown GPU 'tpu'" in err


def test_smaller_gpus_leave_less_room_then_refuse(no_hf_cache):
    """The 70B over four 40 GB A100s starts with room for one 8192-token sequence (said, not refused); over four
    24 GB L4s its 35 GB of weights per GPU cannot load."""
    plan = capacity_plan(FLAGSHIP, GPUS["a100-40gb"])
    assert plan.servers[1].memory.full_length_sequences == 1
    assert any(n.startswith("candidates.2: the KV cache holds 1 sequences of 8192 tokens per replica and the suite "
                            "sends up to 32") for n in plan.notes)
    with pytest.raises(ConfigError) as info:
        capacity_plan(FLAGSHIP, GPUS["l4"])
    assert info.value.field == "candidates.2.serve.tensor_parallel_size"


@pytest.mark.parametrize("entry", sorted({id(e): e for e in table().values()}.values(), key=lambda e: e.ids[0]),
                         ids=lambda e: e.ids[0])
def test_each_shipped_shape_counts_its_published_parameters(entry):
    assert entry.parameters == pytest.approx(entry.published_parameters, rel=0.02)


def _hf_cache_with(cache: Path, repo: str, config: dict) -> None:
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("abc123")
    (folder / "snapshots" / "abc123").mkdir(parents=True)
    (folder / "snapshots" / "abc123" / "config.json").write_text(json.dumps(config))


LLAMA_8B_CONFIG = {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
                   "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 128256,
                   "max_position_embeddings": 131072, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}


def test_a_cached_or_local_config_wins_over_the_table(tmp_path, no_hf_cache):
    assert shape_of(LLAMA_8B).source == "shipped table"
    _hf_cache_with(no_hf_cache, LLAMA_8B, {**LLAMA_8B_CONFIG, "num_hidden_layers": 16})
    cached = shape_of(LLAMA_8B)
    assert cached.shape.layers == 16 and cached.source.endswith("config.json")
    local = tmp_path / "my-llama"
    local.mkdir()
    (local / "config.json").write_text(json.dumps({**LLAMA_8B_CONFIG, "num_key_value_heads": 4}))
    found = shape_of(str(local))
    assert found.shape.kv_heads == 4 and found.shape.head_dim == 128 and found.source == str(local / "config.json")


def test_a_config_the_planner_cannot_size_names_the_field(tmp_path, monkeypatch, capsys, no_hf_cache):
    _hf_cache_with(no_hf_cache, LLAMA_70B, {**LLAMA_8B_CONFIG, "num_local_experts": 8})
    code, _, err = run_cli(monkeypatch, capsys, "plan", str(FLAGSHIP))
    assert code == 2 and f"candidates.2.model: {no_hf_cache}" in err and "mixture-of-experts" in err


def test_kv_heads_are_split_over_tensor_parallel_ranks_or_copied():
    shape = ModelShape(**{k: v for k, v in table()[LLAMA_70B.lower()].model_dump().items()
                          if k in ModelShape.model_fields})
    assert kv_per_token(shape, 1, 1, 2) == 2 * 80 * 8 * 128 * 2
    assert kv_per_token(shape, 8, 1, 2) == 2 * 80 * 1 * 128 * 2
    assert kv_per_token(shape, 16, 1, 2) == 2 * 80 * 1 * 128 * 2  # fewer KV heads than ranks: each keeps a copy
    assert kv_per_token(shape, 4, 2, 2) == 2 * 40 * 2 * 128 * 2


def test_fsdp_shards_the_base_and_ddp_copies_it(no_hf_cache):
    shape = shape_of(LLAMA_70B).shape
    ddp = finetune_memory(shape, FinetuneSpec(task="t", distributed={"processes": 8, "strategy": "ddp"}))
    fsdp = finetune_memory(shape, FinetuneSpec(task="t", distributed={"processes": 8, "strategy": "fsdp"}))
    assert ddp.base == pytest.approx(141.1e9, rel=0.01)
    layer = sum(i * o for i, o in shape.linear().values()) * 2
    assert fsdp.base == pytest.approx(ddp.base / 8 + 2 * layer)  # a shard, and the two layers gathered at a time
    assert fsdp.optimizer == pytest.approx(ddp.optimizer / 8)
    checkpointed = finetune_memory(shape, FinetuneSpec(task="t", gradient_checkpointing=True))
    assert checkpointed.activations < ddp.activations / 10


def _served_suite(tmp_path: Path, model: Path, *serves: dict) -> Path:
    task = str(classification_task(tmp_path / "task", n_test=4, n_train=8))
    return write_yaml(tmp_path / "suite.yaml", {"name": "s", "tasks": [task], "candidates": [
        {"name": f"c{i}", "model": str(model), "backend": "vllm", "serve": serve} for i, serve in enumerate(serves)]})


def test_a_run_refuses_servers_piled_on_one_gpu_only_where_there_is_one(tmp_path, monkeypatch, talking_model):
    """The demo's shape (two servers, no devices) runs on a CPU as before; on a GPU both would start on GPU 0."""
    suite = _served_suite(tmp_path, talking_model, {"max_model_len": 512}, {"max_model_len": 1024})
    monkeypatch.setattr(capacity, "local_gpu", lambda: None)
    make_plan(suite)
    monkeypatch.setattr(capacity, "local_gpu", lambda: GPUS["h100"])
    with pytest.raises(ConfigError, match="lists no `devices`, so it starts on GPU 0") as info:
        make_plan(suite)
    assert info.value.field == "candidates.1.serve.devices"


def test_a_run_refuses_a_tensor_size_the_heads_do_not_split_into_on_a_cpu_too(tmp_path, monkeypatch, talking_model):
    monkeypatch.setattr(capacity, "local_gpu", lambda: None)
    suite = _served_suite(tmp_path, talking_model, {"tensor_parallel_size": 2})
    with pytest.raises(ConfigError, match=r"2 does not divide .*'s 3 attention heads") as info:
        make_plan(suite)
    assert info.value.field == "candidates.0.serve.tensor_parallel_size"


def test_the_shipped_table_is_validated(tmp_path, monkeypatch):
    from harness.capacity import shapes
    from harness.errors import HarnessError

    broken = tmp_path / "shapes.json"
    data = json.loads(shapes.TABLE_FILE.read_text())
    data["models"][0]["layers"] = -1
    broken.write_text(json.dumps(data))
    monkeypatch.setattr(shapes, "TABLE_FILE", broken)
    shapes.table.cache_clear()
    try:
        with pytest.raises(HarnessError, match="not a table of model shapes"):
            shapes.table()
    finally:
        shapes.table.cache_clear()
