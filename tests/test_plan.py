"""Planning: every check before work, with errors naming the file and field; an adapter prompted as its lineage
says it was trained unless the suite says otherwise; rebuilding the plan of a run already on disk (older run.json
snapshots: tests/test_run_record.py)."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from harness.errors import ConfigError, HarnessError
from harness.manifest_check import check_against
from harness.manifest_spec import Manifest
from harness.metrics import METRICS
from harness.plan import make_plan
from harness.records import Completion
from harness.scoring import TaskEvidence
from harness.store import LINEAGE_FILE
from tests.conftest import classification_task, qa_task, write_yaml


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
        make_plan(suite)
    assert info.value.field == field


def test_a_lora_rank_vllm_would_refuse_is_found_first(tmp_path, talking_model, lora_adapter):
    task = str(classification_task(tmp_path / "task", n_test=4, n_train=8))
    for cand in ({"adapter": str(lora_adapter), "serve": {"max_lora_rank": 4}},  # the fixture's rank is 8
                 {"finetune": {"task": "keywords", "rank": 32}}):
        suite = write_yaml(tmp_path / "suite.yaml", {"name": "s", "tasks": [task], "candidates": [
            {"name": "ft", "model": str(talking_model), "backend": "vllm", **cand}]})
        with pytest.raises(ConfigError, match="exceeds max_lora_rank") as info:
            make_plan(suite)
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
        make_plan(suite)


def test_two_tasks_may_define_one_metric_name_differently(tmp_path, talking_model):
    """A task's own metrics are its planned task's, never the registry's: two tasks of one suite define `judged` as
    judges of two scales and `overlap` as two evaluate modules, and each task is checked and scored with its own."""
    modules = {"a": Path(__file__).resolve().parents[1] / "examples" / "own-case" / "word_overlap.py",
               "b": Path(__file__).parent / "evaluate_modules" / "length_ratio.py"}
    paths = []
    for name, scale, extra in (("a", "pass_fail", {}), ("b", "1-5", {"key": "ratio", "per_example": False})):
        path = qa_task(tmp_path / name)
        shutil.copy(modules[name], path.parent)
        task = {**yaml.safe_load(path.read_text()), "name": name, "metrics": [
            {"evaluate": modules[name].name, "name": "overlap", **extra},
            {"judge": "m", "candidate": True, "rubric": "Is it right?", "scale": scale, "name": "judged"}]}
        paths.append(str(write_yaml(path, task)))
    run_plan = make_plan(write_yaml(tmp_path / "suite.yaml", {"name": "s", "tasks": paths, "candidates": [
        {"name": "m", "model": str(talking_model)}]}))
    a, b = run_plan.tasks
    assert "overlap" not in METRICS and "judged" not in METRICS
    assert (a.metrics["judged"].value_range, b.metrics["judged"].value_range) == ((0.0, 1.0), (1.0, 5.0))

    # The manifest is checked against each task's own: at least 3 can hold on b's 1-5 scale, never on a's pass/fail.
    metrics, runs = {t.name: t.metrics for t in run_plan.tasks}, {"a": ["m"], "b": ["m"]}
    criterion = {"metric": "judged", "candidate": "m", "at_least": 3}
    check_against(Manifest.model_validate({"criteria": [{"task": "b", **criterion}]}), "m.yaml", runs, metrics)
    with pytest.raises(ConfigError, match="judged is at most 1; at least 3 can never hold"):
        check_against(Manifest.model_validate({"criteria": [{"task": "*", **criterion}]}), "m.yaml", runs, metrics)

    # The same answers (each reference and one word more) scored on each: a's per-answer word overlap, b's ratio of
    # all answer words to all reference words.
    values = {}
    for task in run_plan.tasks:
        refs = [ex.references[0] for ex in task.data.test]
        answers = [Completion(ex.id, "m", task.name, f"{ref} zebra") for ex, ref in zip(task.data.test, refs,
                                                                                          strict=True)]
        evidence = TaskEvidence(task.spec, task.data.test, None, {"m": answers}, 200, 0, metrics=task.metrics)
        values[task.name] = (evidence.interval("overlap", "m", 0.95).value, refs)
    overlap, refs = values["a"]
    assert overlap == pytest.approx(np.mean([len(set(r.lower().split())) / len(set(r.lower().split()) | {"zebra"})
                                             for r in refs]))
    ratio, refs = values["b"]
    assert ratio == pytest.approx(sum(len(r.split()) + 1 for r in refs) / sum(len(r.split()) for r in refs))


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
        make_plan(suite)
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
        make_plan(suite)
    assert info.value.field == field


def test_a_human_metric_listed_in_a_task_is_refused(tmp_path, talking_model):
    task = classification_task(tmp_path / "task", n_test=4, n_train=8, metrics=["accuracy", "human_rating"])
    suite = write_yaml(tmp_path / "suite.yaml", {"name": "s", "tasks": [str(task)],
                                                 "candidates": [{"name": "a", "model": str(talking_model)}]})
    with pytest.raises(ConfigError, match="human_rating comes from reviewers' ratings"):
        make_plan(suite)


@pytest.mark.parametrize("name", ["../up", "/abs", "a/b", ""])
def test_a_suite_name_that_is_not_a_plain_name_is_refused(tmp_path, name):
    suite = write_yaml(tmp_path / "suite.yaml", {"name": name, "tasks": ["banking77"],
                                                 "candidates": [{"name": "a", "model": "m"}]})
    with pytest.raises(ConfigError) as info:
        make_plan(suite)
    assert info.value.field == "name"


@pytest.mark.parametrize("backend", ["hf", "vllm"])
def test_a_backend_with_local_weights_needs_them_found(tmp_path, backend):
    suite = write_yaml(tmp_path / "suite.yaml", {"name": "s", "tasks": ["banking77"], "candidates": [
        {"name": "a", "model": str(tmp_path / "nowhere"), "backend": backend}]})
    with pytest.raises(ConfigError, match="does not exist") as info:
        make_plan(suite)
    assert info.value.field == "candidates.0.model"
    typo = write_yaml(tmp_path / "typo.yaml", {"name": "s", "tasks": ["banking77"], "candidates": [
        {"name": "a", "model": "smollm2-135m-instruc", "backend": backend}]})
    with pytest.raises(ConfigError, match="did you mean 'smollm2-135m-instruct'") as info:
        make_plan(typo)
    assert info.value.field == "candidates.0.model"


# The demo's fine-tune learned the bare message: no system prompt, no label list, no chat template.
BARE = {"system": "", "template": "Message: {text}", "answer_prefix": "\nIntent:", "few_shot_separator": "\n\n"}


def _trained_adapter(tmp_path, lora_adapter, lineage):
    """A copy of the test adapter with the lineage.json `harness finetune` would have written beside it."""
    import shutil

    folder = Path(shutil.copytree(lora_adapter, tmp_path / "trained-adapter"))
    (folder / LINEAGE_FILE).write_text(lineage if isinstance(lineage, str) else json.dumps(
        {"candidate": "ft", "adapter_key": "0123", "base_model": "m", "generation": 1, **lineage}))
    return folder


def test_an_adapter_is_prompted_as_it_was_trained_unless_the_suite_says_otherwise(tmp_path, talking_model,
                                                                                   lora_adapter):
    adapter = str(_trained_adapter(tmp_path, lora_adapter, {"task": "keywords", "prompt": BARE, "chat": False}))
    tasks = [str(classification_task(tmp_path / "t1", n_test=4, n_train=8)),
             str(classification_task(tmp_path / "t2", n_test=4, n_train=8, name="other"))]
    suite = write_yaml(tmp_path / "suite.yaml", {"name": "s", "tasks": tasks, "candidates": [
        {"name": "base", "model": str(talking_model)},
        {"name": "named", "model": str(talking_model), "adapter": adapter},
        {"name": "served", "model": str(talking_model), "adapter": adapter, "backend": "vllm", "tasks": ["keywords"]},
        {"name": "told", "model": str(talking_model), "adapter": adapter, "chat": True,
         "prompts": {"keywords": {"system": "Pick a label."}}},
        {"name": "elsewhere", "model": str(talking_model), "adapter": str(lora_adapter)}]})
    run_plan = make_plan(suite)
    keywords = run_plan.tasks[0]
    cand = {c.name: c for c in run_plan.suite.candidates}
    asked = {(c, t.name): run_plan.requests(t, cand[c]) for c in cand for t in run_plan.tasks if cand[c].runs(t.name)}

    # Named in another suite, the adapter is asked the bare prompt it learned, without the chat template ...
    bare = [f"Message: {ex.inputs['text']}\nIntent:" for ex in keywords.data.test]
    assert [r.prompt for r in asked["named", "keywords"]] == bare
    assert [r.messages for r in asked["named", "keywords"]] == [[{"role": "user", "content": b}] for b in
                                                                [b.removesuffix("\nIntent:") for b in bare]]
    assert cand["named"].options.chat is False and cand["served"].options.endpoint == "completions"
    assert make_plan(suite, in_process=True).suite.candidate("served").options.chat_template() is False
    # ... on the task it was trained on: another task gets the suite's prompt (the chat setting stays as trained).
    assert asked["named", "other"] == asked["base", "other"]
    # The suite's own settings win; an adapter trained elsewhere (no lineage) is prompted as the suite says.
    assert cand["told"].options.chat is True
    assert asked["told", "keywords"][0].messages[0] == {"role": "system", "content": "Pick a label."}
    assert asked["elsewhere", "keywords"] == asked["base", "keywords"] and cand["elsewhere"].options.chat is None
    # and where each came from, as run.json records it
    sources = {(c, t): (how.prompt, how.chat) for c, per in run_plan.prompting.items() for t, how in per.items()}
    assert sources == {("named", "keywords"): ("lineage", "lineage"), ("named", "other"): ("suite", "lineage"),
                       ("served", "keywords"): ("lineage", "lineage"),
                       ("told", "keywords"): ("suite", "suite"), ("told", "other"): ("suite", "suite"),
                       ("elsewhere", "keywords"): ("suite", "suite"), ("elsewhere", "other"): ("suite", "suite")}
    assert "trained on task keywords, not other" in run_plan.prompting["named"]["other"].why
    assert "`prompts.keywords` overrides" in run_plan.prompting["told"]["keywords"].why
    assert "`chat` overrides" in run_plan.prompting["told"]["keywords"].why
    assert "no lineage.json" in run_plan.prompting["elsewhere"]["keywords"].why


@pytest.mark.parametrize(("lineage", "field", "message"), [
    ({"task": "keywords", "prompt": {**BARE, "template": "Message: {message}"}, "chat": False},
     "candidates.0.adapter", "the prompt it was trained with does not fit task keywords (unknown slot(s) ['message']"),
    ({"task": "keywords", "prompt": BARE}, "chat", "Field required"),
    ("{not json", None, "malformed JSON"),
    ("[]", None, "not an adapter lineage (expected a JSON object)"),
])
def test_a_lineage_that_cannot_be_followed_is_one_line_naming_the_file(tmp_path, talking_model, lora_adapter, lineage,
                                                                       field, message):
    adapter = _trained_adapter(tmp_path, lora_adapter, lineage)
    suite = write_yaml(tmp_path / "suite.yaml", {
        "name": "s", "tasks": [str(classification_task(tmp_path / "task", n_test=4, n_train=8))],
        "candidates": [{"name": "named", "model": str(talking_model), "adapter": str(adapter)}]})
    with pytest.raises(HarnessError, match=re.escape(message)) as info:
        make_plan(suite)
    assert len(str(info.value).splitlines()) == 1
    if field == "candidates.0.adapter":
        assert info.value.field == field and info.value.path == suite
    else:
        assert str(info.value).startswith(f"{adapter / LINEAGE_FILE}") and getattr(info.value, "field", None) == field
