"""Configuration models: the shipped suites validate, the serve options check themselves, and a data block is read by
the source its keys name."""

from pathlib import Path

import pytest

from harness.backends.vllm_server import ServeSpec
from harness.config import PROJECT_ROOT, DataSpec, TaskSpec, load_suite, load_task
from harness.errors import ConfigError
from harness.plan import load_suite_manifest, plan_tasks
from harness.sources import SOURCES, DataSource, Table, register
from harness.sources.dvc_repo import Dvc
from harness.sources.files import Files
from harness.sources.hf_datasets import HFDatasets
from tests.conftest import write_yaml

SUITES = sorted((PROJECT_ROOT / "suites").glob("*.yaml"))


@pytest.mark.parametrize("path", [p for p in SUITES if not p.name.endswith("-manifest.yaml")], ids=lambda p: p.name)
def test_shipped_suites_validate(path: Path):
    suite = load_suite(path)
    tasks = plan_tasks(suite, path)
    assert tasks and suite.candidates
    manifest = load_suite_manifest(suite, path)
    if manifest is not None:
        assert manifest.criteria


def test_the_gpu_suite_splits_its_devices():
    suite = load_suite(PROJECT_ROOT / "suites" / "llama-8b-vs-70b.yaml")
    big = suite.candidate("llama-70b").options.serve
    assert big.tensor_parallel_size == 4 and big.devices_of(0) == [2, 3, 4, 5]
    small = suite.candidate("llama-8b").options.serve
    assert [small.devices_of(r) for r in range(small.replicas)] == [[0], [1]]


def test_devices_must_match_the_parallelism():
    with pytest.raises(ValueError, match="needs 4"):
        ServeSpec(tensor_parallel_size=2, replicas=2, devices=[0, 1, 2])


@pytest.mark.parametrize(("serve", "message"), [("{max_lora_rank: true}", "is a number, not true/false"),
                                                ("{startup_timeout_s: .inf}", "finite number")])
def test_serve_settings_have_every_settings_guard(tmp_path, serve, message):
    path = tmp_path / "s.yaml"
    candidate = f"{{name: a, model: m, backend: vllm, serve: {serve}}}"
    path.write_text(f"name: x\ntasks: [banking77]\ncandidates:\n  - {candidate}\n")
    with pytest.raises(ConfigError, match=rf"candidates\.0\.serve.*{message}"):
        load_suite(path)


def test_a_field_inside_a_validated_union_is_named_as_written(tmp_path):
    """pydantic puts a validator's and a union member's name into an error's location; the user wrote neither."""
    path = tmp_path / "s.yaml"
    path.write_text("name: x\ntasks: [banking77]\ncandidates: [{name: a, model: m}]\nmanifest: {monitor: {}}\n")
    with pytest.raises(ConfigError) as info:
        load_suite(path)
    assert str(info.value) == f"{path}: manifest.criteria: Field required"


def test_serve_options_only_for_vllm(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: x\ntasks: [banking77]\ncandidates:\n  - {name: a, model: m, serve: {replicas: 2}}\n")
    with pytest.raises(ConfigError, match=r"candidates\.0\.serve: not a setting of backend hf "
                       r"\(its settings: batch_size, chat, dtype\)"):
        load_suite(path)


@pytest.mark.parametrize(("asked", "native", "cuda", "passed"), [
    ("auto", "float32", False, "float32"), ("auto", "bfloat16", False, "bfloat16"),
    ("auto", "float32", True, "auto"), ("float16", "float32", False, "float16")])
def test_a_vllm_server_gets_the_native_dtype_on_a_cpu(tmp_path, monkeypatch, asked, native, cuda, passed):
    from harness.backends import vllm_server

    monkeypatch.setattr(vllm_server.models, "native_dtype", lambda: native)
    monkeypatch.setattr(vllm_server, "_has_cuda", lambda: cuda)
    server = vllm_server.VllmServer(vllm_server.ServerGroup("m", "m", ServeSpec(dtype=asked)), tmp_path)
    command = server.command()
    assert command[command.index("--dtype") + 1] == passed


def _task_with(tmp_path, data):
    spec = {"name": "t", "kind": "generation", "data": {"inputs": {"q": "q"}, "reference": "r", **data},
            "prompt": {"template": "{q}"}, "metrics": ["exact_match"]}
    return load_task(str(write_yaml(tmp_path / "task.yaml", spec)))


@pytest.mark.parametrize(("data", "error"), [
    ({}, r"data: `test` \(or `path` with `split`\), `dvc` or `dataset` is required"),
    ({"test": "t.jsonl", "dvc": {"repo": "r", "path": "p"}},
     r"data: `test` and `dvc` are settings of two sources of rows \(files, dvc\)"),
    ({"dvc": {"repo": "r", "path": "p"}, "format": "csv"}, r"data: `dvc` and `format` are settings of two sources"),
    ({"dvc": {"path": "p"}}, r"data\.dvc\.repo: Field required"),
    ({"dvc": {"repo": "r", "path": "p", "revision": "v1"}}, r"data\.dvc\.revision: Extra inputs"),
    ({"dvc": {"repo": "r", "path": "p", "test": "t"}}, r"data\.dvc: give either `path`"),
    ({"dataset": {"saved": "s", "splits": {"tests": "x"}}}, r"data\.dataset\.splits\.tests: Extra inputs"),
    ({"test": "t.jsonl", "fromat": "csv"}, r"data\.fromat: Extra inputs"),
    ({"path": "p.jsonl", "split": {"test_size": True}}, r"data\.split: `test_size` is a number"),
])
def test_a_data_block_error_names_the_field_as_written(tmp_path, data, error):
    with pytest.raises(ConfigError, match=rf"task\.yaml: {error}"):
        _task_with(tmp_path, data)


@pytest.mark.parametrize(("data", "source"), [
    ({"path": "p.jsonl", "split": {"test_size": 0.3}, "format": "jsonl"}, Files),
    ({"dataset": {"id": "x", "revision": "v1"}}, HFDatasets),
    ({"dvc": {"repo": "r", "test": "t.csv", "train": "u.csv", "rev": "v2"}}, Dvc),
])
def test_a_data_block_is_read_by_the_source_its_keys_name_and_written_back_as_it_was(tmp_path, data, source):
    task = _task_with(tmp_path, data)
    assert type(task.data.source) is source
    dumped = task.data.model_dump(mode="json", exclude_defaults=True)
    assert dumped == {"inputs": {"q": "q"}, "reference": "r", **data}
    # A torchrun worker rebuilds the task from its dump; code builds the block from its parts.
    assert TaskSpec.model_validate(task.model_dump(mode="json")).data == task.data
    assert DataSpec(inputs={"q": "q"}, reference="r", source=task.data.source) == task.data


def test_a_source_may_not_claim_another_sources_setting():
    class Clash(DataSource):
        kind = "clash"
        summary = "`clash`"
        test: str

        def tables(self, task_file: Path) -> list[Table]:
            return []

    with pytest.raises(ValueError, match="claims test, settings of 'files'"):
        register(Clash)
    assert "clash" not in SOURCES
