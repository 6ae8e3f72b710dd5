"""Planning: every check before work, with errors naming the file and field; rebuilding the plan of a run
already on disk (including run.json snapshots of the first schema)."""

import json

import pytest

from harness.config import Suite
from harness.errors import ConfigError
from harness.plan import _upgrade_snapshot, plan
from tests.conftest import classification_task, write_yaml


@pytest.mark.parametrize(("change", "field", "message"), [
    ({"tasks": ["nope"]}, "candidates.1.tasks", "the suite has no task 'nope'"),
    ({"tasks": []}, "candidates.1.tasks", "an empty task list scores nothing"),
    ({"prompts": {"nope": {"system": "x"}}}, "candidates.1.prompts", "the suite has no task 'nope'"),
    ({"prompts": {"keywords": {"template": "{nope}"}}}, "candidates.1.prompts.keywords.template", "unknown slot"),
])
def test_candidate_task_scope_and_prompt_changes_are_checked(tmp_path, talking_model, change, field, message):
    suite = write_yaml(tmp_path / "suite.yaml", {
        "name": "s", "tasks": [str(classification_task(tmp_path / "task", n_test=4, n_train=8))],
        "candidates": [{"name": "a", "model": str(talking_model)},
                       {"name": "b", "model": str(talking_model), **change}]})
    with pytest.raises(ConfigError, match=message) as info:
        plan(suite)
    assert info.value.field == field


def test_a_lora_rank_vllm_would_refuse_is_found_first(tmp_path, talking_model, lora_adapter):
    task = str(classification_task(tmp_path / "task", n_test=4, n_train=8))
    for cand in ({"adapter": str(lora_adapter), "serve": {"max_lora_rank": 4}},  # the fixture's rank is 8
                 {"finetune": {"task": "keywords", "rank": 32}}):
        suite = write_yaml(tmp_path / "suite.yaml", {"name": "s", "tasks": [task], "candidates": [
            {"name": "ft", "model": str(talking_model), "backend": "vllm", **cand}]})
        with pytest.raises(ConfigError, match="exceeds max_lora_rank") as info:
            plan(suite)
        assert info.value.field == "candidates.0.serve.max_lora_rank"


def test_a_criterion_on_a_task_its_candidate_skips_is_refused(tmp_path, talking_model):
    tasks = [str(classification_task(tmp_path / "t1", n_test=4, n_train=8)),
             str(classification_task(tmp_path / "t2", n_test=4, n_train=8, name="other"))]
    suite = write_yaml(tmp_path / "suite.yaml", {
        "name": "s", "tasks": tasks,
        "candidates": [{"name": "a", "model": str(talking_model)},
                       {"name": "b", "model": str(talking_model), "tasks": ["keywords"]}],
        "manifest": {"criteria": [{"task": "other", "metric": "accuracy", "candidate": "b", "better_than": "a"}]}})
    with pytest.raises(ConfigError, match="candidate 'b' is not scored on other"):
        plan(suite)


def test_a_schema_1_snapshot_keeps_only_its_own_backend_and_detector_settings():
    """Runs written before backends owned their options stored every backend's settings in each candidate."""
    v1 = {"name": "s", "seed": 0, "tasks": [{"task": "t", "limit": None, "sample": None, "detector": {
        "name": "grounding", "model": None, "url": None, "api_key_env": None, "tolerance": 0.2, "threshold": 0.5}}],
        "candidates": [
            {"name": "local", "model": "m", "adapter": None, "backend": "hf", "url": None, "api_key_env": None,
             "endpoint": "chat", "few_shot": 2, "chat": None, "batch_size": 4, "concurrency": 4, "timeout_s": 120.0,
             "max_retries": 3, "dtype": "auto", "cost_per_hour": 0.0, "serve": {"replicas": 1}, "finetune": None,
             "tasks": None, "prompts": {}},
            {"name": "served", "model": "m", "adapter": None, "backend": "vllm", "url": None, "api_key_env": None,
             "endpoint": "chat", "few_shot": 0, "chat": None, "batch_size": 8, "concurrency": 16, "timeout_s": 60.0,
             "max_retries": 1, "dtype": "auto", "cost_per_hour": 2.5, "serve": {"max_lora_rank": 32},
             "finetune": None, "tasks": None, "prompts": {}}]}
    with pytest.raises(ValueError):
        Suite.model_validate(v1)
    suite = Suite.model_validate(_upgrade_snapshot(json.loads(json.dumps(v1)), schema=1))
    local, served = suite.candidates
    assert local.backend == "hf" and local.options.batch_size == 4 and local.few_shot == 2
    assert served.backend == "vllm" and served.options.concurrency == 16 and served.options.serve.max_lora_rank == 32
    assert suite.tasks[0].detector.tolerance == 0.2
    # and the snapshot a run writes now validates as it is
    assert Suite.model_validate(suite.model_dump(mode="json")) == suite


@pytest.mark.parametrize(("candidate", "field", "message"), [
    ({"backend": "tgi"}, "candidates.0.backend", "unknown backend 'tgi'; known: hf, openai, vllm"),
    ({"url": "http://x"}, "candidates.0.url", "not a setting of backend hf"),
    ({"backend": "openai"}, "candidates.0.url", "backend `openai` needs `url`"),
    ({"backend": "vllm", "batch_size": 4}, "candidates.0.batch_size", "not a setting of backend vllm"),
    ({"backend": "vllm", "serve": {"replicas": 0}}, "candidates.0.serve.replicas", "greater than or equal to 1"),
])
def test_backend_settings_are_checked_against_the_chosen_backend(tmp_path, candidate, field, message):
    suite = write_yaml(tmp_path / "suite.yaml", {"name": "s", "tasks": ["banking77"],
                                                 "candidates": [{"name": "a", "model": "m", **candidate}]})
    with pytest.raises(ConfigError, match=message) as info:
        plan(suite)
    assert info.value.field == field and info.value.path == suite


@pytest.mark.parametrize(("detector", "field", "message"), [
    ({"name": "oracle"}, "tasks.0.detector.name", "unknown detector 'oracle'"),
    ({"name": "nli"}, "tasks.0.detector.model", "detector `nli` needs `model`"),
    ({"name": "grounding", "threshold": 0.3}, "tasks.0.detector.threshold", "not a setting of detector grounding"),
    ({"tolerance": 2}, "tasks.0.detector.tolerance", "less than 1"),  # no name: the default, grounding
])
def test_detector_settings_are_checked_against_the_chosen_detector(tmp_path, detector, field, message):
    suite = write_yaml(tmp_path / "suite.yaml", {"name": "s", "tasks": [{"task": "banking77", "detector": detector}],
                                                 "candidates": [{"name": "a", "model": "m"}]})
    with pytest.raises(ConfigError, match=message) as info:
        plan(suite)
    assert info.value.field == field


def test_a_human_metric_listed_in_a_task_is_refused(tmp_path, talking_model):
    task = classification_task(tmp_path / "task", n_test=4, n_train=8, metrics=["accuracy", "human_rating"])
    suite = write_yaml(tmp_path / "suite.yaml", {"name": "s", "tasks": [str(task)],
                                                 "candidates": [{"name": "a", "model": str(talking_model)}]})
    with pytest.raises(ConfigError, match="human_rating comes from reviewers' ratings"):
        plan(suite)


@pytest.mark.parametrize("name", ["../up", "/abs", "a/b", ""])
def test_a_suite_name_that_is_not_a_plain_name_is_refused(tmp_path, name):
    suite = write_yaml(tmp_path / "suite.yaml", {"name": name, "tasks": ["banking77"],
                                                 "candidates": [{"name": "a", "model": "m"}]})
    with pytest.raises(ConfigError) as info:
        plan(suite)
    assert info.value.field == "name"


@pytest.mark.parametrize("backend", ["hf", "vllm"])
def test_a_backend_with_local_weights_needs_them_found(tmp_path, backend):
    suite = write_yaml(tmp_path / "suite.yaml", {"name": "s", "tasks": ["banking77"], "candidates": [
        {"name": "a", "model": str(tmp_path / "nowhere"), "backend": backend}]})
    with pytest.raises(ConfigError, match="does not exist") as info:
        plan(suite)
    assert info.value.field == "candidates.0.model"
