"""An adapter must be seen to change answers before it is scored: a zeroed adapter (what an adapter that is
silently not applied looks like) stops the run with one line naming the candidate, unless accepted; a real
one passes, and run.json keeps the probe."""

import json

import pytest

from harness.adapter_probe import PROBE_TOKENS, probe_requests
from harness.pipeline import run_suite
from harness.plan import make_plan
from tests.conftest import classification_task, qa_task, write_yaml

pytestmark = pytest.mark.slow


def _suite(tmp_path, talking_model, adapter, **cand):
    task = classification_task(tmp_path / "task", n_test=6, generation={"max_new_tokens": 6})
    return write_yaml(tmp_path / "suite.yaml", {
        "name": "probe", "tasks": [str(task)], "bootstrap": {"resamples": 100},
        "candidates": [{"name": "base", "model": str(talking_model)},
                       {"name": "ft", "model": str(talking_model), "adapter": str(adapter), **cand}]})


def test_a_zeroed_adapter_stops_the_run_naming_the_candidate(tmp_path, talking_model, zero_lora_adapter,
                                                              monkeypatch, capsys):
    from tests.test_cli import run_cli

    suite = _suite(tmp_path, talking_model, zero_lora_adapter)
    code, err = run_cli(monkeypatch, capsys, "run", str(suite), "--results", str(tmp_path / "r"), "--run-id", "z")
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert "candidate 'ft'" in lines[0] and "exactly as its base" in lines[0]
    assert "accept_unchanged_adapter" in lines[0]
    record = json.loads((tmp_path / "r" / "z" / "run.json").read_text())
    assert record["status"] == "failed" and not (tmp_path / "r" / "z" / "predictions" / "ft").exists()


def test_an_accepted_unchanged_adapter_is_scored_and_the_probe_kept(tmp_path, talking_model, zero_lora_adapter):
    suite = _suite(tmp_path, talking_model, zero_lora_adapter, accept_unchanged_adapter=True)
    result = run_suite(suite, tmp_path / "r", run_id="a")
    probe = json.loads((result.run_dir / "run.json").read_text())["adapter_probes"]["ft"]
    assert probe["differing"] == 0 and probe["probes"] == 6 and probe["accepted_unchanged"] is True
    assert all(e["base"] == e["adapted"] and e["base"] for e in probe["examples"])


def test_a_real_adapter_passes_and_run_json_shows_what_it_changed(tmp_path, talking_model, lora_adapter):
    result = run_suite(_suite(tmp_path, talking_model, lora_adapter), tmp_path / "r", run_id="ok")
    record = json.loads((result.run_dir / "run.json").read_text())
    probe = record["adapter_probes"]["ft"]
    assert probe["adapter"] == str(lora_adapter) and probe["probes"] == 6 and probe["differing"] >= 3
    assert any(e["base"] != e["adapted"] for e in probe["examples"])
    assert "base" not in record["adapter_probes"], "no adapter, no probe"
    assert record["status"] == "complete"


def test_probes_are_the_candidates_own_prompts_across_its_tasks_with_short_answers(tmp_path, talking_model,
                                                                                   lora_adapter):
    kw = classification_task(tmp_path / "kw", n_test=3, generation={"max_new_tokens": 40})
    qa = qa_task(tmp_path / "qa")
    suite = write_yaml(tmp_path / "suite.yaml", {
        "name": "p", "tasks": [str(kw), {"task": str(qa), "limit": 8}],
        "candidates": [{"name": "ft", "model": str(talking_model), "adapter": str(lora_adapter), "few_shot": 1}]})
    run_plan = make_plan(suite)
    cand = run_plan.suite.candidates[0]
    probes = probe_requests(run_plan, cand)
    own = {r.example_id: (t.name, r) for t in run_plan.tasks for r in run_plan.requests(t, cand)}
    originals = [own[p.example_id.split("-", 2)[2]] for p in probes]
    assert [task for task, _ in originals] == ["keywords", "qa"] * 3 + ["qa", "qa"], "tasks in turn"
    assert len({p.example_id for p in probes}) == 8
    for p, (_, original) in zip(probes, originals, strict=True):
        assert p.prompt == original.prompt and p.messages == original.messages  # few-shot examples and all
        assert p.max_new_tokens == min(original.max_new_tokens, PROBE_TOKENS)
    assert {p.max_new_tokens for p in probes} == {PROBE_TOKENS, 6}
