"""Configuration models: the shipped suites validate, and the serve options check themselves."""

from pathlib import Path

import pytest

from harness.backends.vllm_server import ServeSpec
from harness.config import PROJECT_ROOT, load_suite
from harness.errors import ConfigError
from harness.plan import load_suite_manifest, plan_tasks

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
