"""`harness run --in-process`: a suite written for vLLM servers generates with transformers instead, answering
as the same candidates written for the in-process backend do; the switch is kept in run.json and a resume
must use it the same way. The shipped demo suite is served and has its in-process twin."""

from __future__ import annotations

import json

import pytest

from harness.backends.hf_local import HFOptions
from harness.backends.vllm_server import ServerPool, VllmOptions, VllmServer
from harness.config import PROJECT_ROOT
from harness.errors import HarnessError
from harness.pipeline import Pipeline
from harness.plan import make_plan
from harness.store import RunDir
from tests.conftest import classification_task, write_yaml
from tests.test_cli import run_cli


def _suites(tmp_path, talking_model, lora_adapter):
    task = str(classification_task(tmp_path / "task", n_test=8))
    served = [
        {"name": "chat", "model": str(talking_model), "backend": "vllm", "concurrency": 2},
        {"name": "plain", "model": str(talking_model), "backend": "vllm", "endpoint": "completions", "few_shot": 2},
        {"name": "ft", "model": str(talking_model), "adapter": str(lora_adapter), "backend": "vllm",
         "endpoint": "completions"},
        {"name": "bare", "model": str(talking_model), "backend": "vllm", "endpoint": "completions"},
    ]
    local = [
        {"name": "chat", "model": str(talking_model)},
        {"name": "plain", "model": str(talking_model), "chat": False, "few_shot": 2},
        {"name": "ft", "model": str(talking_model), "adapter": str(lora_adapter), "chat": False},
        {"name": "bare", "model": str(talking_model), "chat": False},
    ]
    common = {"name": "s", "tasks": [task], "bootstrap": {"resamples": 100}}
    return (write_yaml(tmp_path / "served.yaml", {**common, "candidates": served}),
            write_yaml(tmp_path / "local.yaml", {**common, "candidates": local}))


def test_in_process_turns_served_candidates_into_their_transformers_twins(tmp_path, talking_model, lora_adapter):
    served, _ = _suites(tmp_path, talking_model, lora_adapter)
    assert all(isinstance(c.options, VllmOptions) for c in make_plan(served).suite.candidates)
    run_plan = make_plan(served, in_process=True)
    options = {c.name: c.options for c in run_plan.suite.candidates}
    assert all(isinstance(o, HFOptions) for o in options.values())
    # the completions endpoint takes the plain prompt: in process, no chat template
    assert [options[n].chat_template() for n in ("chat", "plain", "ft", "bare")] == [None, False, False, False]
    assert run_plan.in_process and run_plan.suite.candidate("ft").adapter == str(lora_adapter)


def test_in_process_says_which_server_settings_it_drops_and_keeps_the_dtype(tmp_path, talking_model):
    task = str(classification_task(tmp_path / "task", n_test=8))
    suite = write_yaml(tmp_path / "s.yaml", {"name": "s", "tasks": [task], "candidates": [
        {"name": "plain", "model": str(talking_model), "backend": "vllm"},
        {"name": "tuned", "model": str(talking_model), "backend": "vllm", "timeout_s": 30,
         "serve": {"max_model_len": 256, "dtype": "float32", "prefix_caching": False}}]})
    assert make_plan(suite).notes == []
    run_plan = make_plan(suite, in_process=True)
    assert run_plan.notes == [f"{suite}: candidates.1: timeout_s, serve.max_model_len, serve.prefix_caching apply to "
                              "its server only; --in-process ignores them"]
    assert run_plan.suite.candidate("tuned").options.dtype == "float32"
    assert run_plan.suite.candidate("plain").options.dtype == "auto"


def test_an_in_process_run_of_a_served_suite_answers_as_the_in_process_suite(tmp_path, talking_model, lora_adapter,
                                                                              monkeypatch, capsys):
    served, local = _suites(tmp_path, talking_model, lora_adapter)
    results = tmp_path / "results"
    code, err = run_cli(monkeypatch, capsys, "run", str(served), "--results", str(results), "--run-id", "switched",
                        "--in-process")
    assert code in (0, None), err
    Pipeline(make_plan(local), results).execute("local")
    record = json.loads((results / "switched" / "run.json").read_text())
    assert record["in_process"] is True and record["status"] == "complete"
    assert {c["backend"] for c in record["suite"]["candidates"]} == {"hf"}
    assert not (results / "switched" / "logs").exists() or not list((results / "switched" / "logs").glob("vllm-*"))
    assert record["dtypes"]["chat/generate"] in ("float32", "bfloat16")
    switched, alone = RunDir(results / "switched"), RunDir(results / "local")
    for name in ("chat", "plain", "ft", "bare"):
        answers = {c.example_id: c.text for c in switched.read_predictions(name, "keywords")}
        assert answers == {c.example_id: c.text for c in alone.read_predictions(name, "keywords")}, name
        assert sum(bool(a.strip()) for a in answers.values()) >= 6, f"{name} must answer, not stay silent"
    ft = {c.example_id: c.text for c in switched.read_predictions("ft", "keywords")}
    bare = {c.example_id: c.text for c in switched.read_predictions("bare", "keywords")}
    assert sum(ft[k] != bare[k] for k in ft) * 2 >= len(ft), "the adapter changes most answers in process too"

    code, err = run_cli(monkeypatch, capsys, "run", str(served), "--results", str(results), "--run-id", "switched",
                        "--resume")
    assert code == 2 and "started with --in-process; resume it the same way" in err, err


def test_the_demo_suite_is_served_one_server_per_base_model(tmp_path):
    demo = PROJECT_ROOT / "suites" / "demo.yaml"
    run_plan = make_plan(demo)
    candidates = run_plan.suite.candidates
    assert all(isinstance(c.options, VllmOptions) for c in candidates)
    targets = [c.deployment("/adapters/smol-ft" if c.finetune else None) for c in candidates]
    pool = ServerPool(targets, str, tmp_path)
    assert len(pool.groups) == 2, "SmolLM2 (its three candidates, the adapter among them) and Gemma"
    smol = pool.groups[pool.group_of["smol-ft"]]
    assert pool.group_of["smol-zero"] == pool.group_of["smol-fewshot"] == pool.group_of["smol-ft"]
    assert list(smol.adapters) == ["smol-ft"]
    command = VllmServer(smol, tmp_path).command()
    assert "--enable-prefix-caching" in command and "--enable-lora" in command
    twin = make_plan(demo, in_process=True).suite.candidates
    assert all(isinstance(c.options, HFOptions) for c in twin)
    assert {c.name: c.options.chat_template() for c in twin} == {
        "smol-zero": None, "smol-fewshot": None, "gemma-fewshot": False, "smol-ft": False}


@pytest.mark.parametrize(("serve", "present", "absent"), [
    ({}, ["--enable-prefix-caching", "--enforce-eager"], ["--no-enable-prefix-caching"]),
    ({"prefix_caching": False, "compile": True}, ["--no-enable-prefix-caching"], ["--enforce-eager"]),
])
def test_server_command_prefix_caching_and_compile(serve, present, absent, monkeypatch, tmp_path):
    """On a CPU the model runs eager by default: torch.compile costs about a minute at start-up for a few per
    cent of speed (README); prefix caching is on unless switched off."""
    from harness.backends import vllm_server

    monkeypatch.setattr(vllm_server, "_has_cuda", lambda: False)
    group = vllm_server.ServerGroup("m", "m", vllm_server.ServeSpec(**serve))
    command = VllmServer(group, tmp_path).command()
    assert all(flag in command for flag in present) and not any(flag in command for flag in absent)


def test_a_missing_vllm_points_at_the_switch(tmp_path, talking_model, lora_adapter, monkeypatch):
    import importlib.util

    from harness.backends import vllm_server

    real = importlib.util.find_spec
    monkeypatch.setattr(vllm_server.importlib.util, "find_spec", lambda name, *a: None if name == "vllm"
                        else real(name, *a))
    group = vllm_server.ServerGroup("m", "m", vllm_server.ServeSpec())
    with pytest.raises(HarnessError, match="--in-process"):
        VllmServer(group, tmp_path / "logs").start()
