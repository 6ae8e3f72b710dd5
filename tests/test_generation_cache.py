"""The generation cache: what changes an answer misses it, what does not hits it, reused answers carry no timing and
decide no latency criterion, failures are never stored, and crashes and resumes neither lose nor duplicate answers."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest
import yaml

from harness.backends import Deployment
from harness.backends.hf_local import HFLocalBackend, HFOptions
from harness.backends.vllm_server import ServeSpec, VllmOptions
from harness.generation_cache import AnswerSource, GenerationCache
from harness.lifecycle import Interrupted
from harness.models import native_dtype
from harness.pipeline import run_suite
from harness.records import Completion, Request
from harness.store import ResultsDir, RunDir
from tests.conftest import classification_task, write_jsonl, write_yaml
from tests.fake_openai_server import FakeServer
from tests.helpers import remote_suite

GREEDY = Request("e1", [{"role": "user", "content": "Text: my card"}], "Text: my card\nLabel: ", 4)
SAMPLED = Request("e1", GREEDY.messages, GREEDY.prompt, 4, temperature=0.7)


def _key(cache: GenerationCache, model: Path, request: Request = GREEDY, adapter: Path | None = None,
         options=None, seed: int = 0, sample: int = 0) -> str:
    target = Deployment("c", str(model), str(adapter) if adapter else None, options or HFOptions())
    return cache.source(target, seed).key(request, sample)


def test_what_changes_an_answer_misses_and_what_does_not_hits(tmp_path, talking_model, lora_adapter,
                                                              zero_lora_adapter):
    cache = GenerationCache(tmp_path / "generations.sqlite")
    base = _key(cache, talking_model)
    assert _key(cache, talking_model) == base
    # The prompt and the generation parameters.
    assert _key(cache, talking_model, Request("e9", GREEDY.messages, GREEDY.prompt, 4)) == base  # not the id
    assert _key(cache, talking_model, Request("e1", GREEDY.messages, "Text: my card!\nLabel: ", 4)) != base
    assert _key(cache, talking_model, Request("e1", [{"role": "user", "content": "x"}], GREEDY.prompt, 4)) != base
    assert _key(cache, talking_model, Request("e1", GREEDY.messages, GREEDY.prompt, 8)) != base
    assert _key(cache, talking_model, Request("e1", GREEDY.messages, GREEDY.prompt, 4, stop=("\n",))) != base
    # The adapter, by content: two adapters differ from each other and from none.
    keys = {_key(cache, talking_model, adapter=a) for a in (None, lora_adapter, zero_lora_adapter)}
    assert len(keys) == 3
    # The dtype the weights compute in: `auto` is this machine's native one.
    other = "float32" if native_dtype() == "bfloat16" else "bfloat16"
    assert _key(cache, talking_model, options=HFOptions(dtype=native_dtype())) == base
    assert _key(cache, talking_model, options=HFOptions(dtype=other)) != base
    assert _key(cache, talking_model, options=HFOptions(chat=False)) != base
    assert _key(cache, talking_model, options=HFOptions(batch_size=1)) == base  # speed, not answers
    # The seed always counts; the sample index for sampled answers only.
    assert _key(cache, talking_model, seed=1) != base
    assert _key(cache, talking_model, sample=1) == base
    sampled = _key(cache, talking_model, SAMPLED, seed=1)
    assert sampled != _key(cache, talking_model, SAMPLED, seed=2)
    assert sampled != _key(cache, talking_model, SAMPLED, seed=1, sample=1)
    # The weights, by content: a copy elsewhere hits, a changed byte misses.
    copy = Path(shutil.copytree(talking_model, tmp_path / "copy"))
    assert _key(cache, copy) == base
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-5 + config["rms_norm_eps"]}))
    assert _key(cache, copy) != base
    # A served backend: where a server runs is not what it answers, its dtype is.
    vllm = VllmOptions(serve=ServeSpec(dtype="float32"))
    assert (_key(cache, talking_model, options=vllm)
            == _key(cache, talking_model, options=VllmOptions(serve=ServeSpec(dtype="float32", replicas=2))))
    assert (_key(cache, talking_model, options=vllm)
            != _key(cache, talking_model, options=VllmOptions(serve=ServeSpec(dtype="bfloat16"))))
    assert _key(cache, talking_model, options=vllm) != base


def _suite(tmp_path: Path, model: Path, manifest: dict | None = None, **task_changes) -> Path:
    task = classification_task(tmp_path / "task", **task_changes)
    return write_yaml(tmp_path / "suite.yaml", {
        "name": "cached", "tasks": [str(task)],
        "candidates": [{"name": "tiny", "model": str(model), "batch_size": 4}],
        "bootstrap": {"resamples": 200}, **({"manifest": manifest} if manifest else {})})


def _predictions(run_dir: Path) -> list:
    return RunDir(run_dir).read_predictions("tiny", "keywords")


LATENCY_CRITERION = {"criteria": [{"task": "keywords", "metric": "e2e_ms_p50", "candidate": "tiny",
                                   "at_most": 100000}]}


def test_a_rerun_reuses_every_answer_opens_no_model_and_decides_no_latency(tmp_path, talking_model, monkeypatch):
    suite = _suite(tmp_path, talking_model, LATENCY_CRITERION)
    first = run_suite(suite, tmp_path / "results", run_id="first")
    assert [v.status for v in first.verdicts] == ["pass"]

    def no_model(*_args, **_kwargs):
        raise AssertionError("the model was loaded though every answer is cached")

    monkeypatch.setattr(HFLocalBackend, "__init__", no_model)
    second = run_suite(suite, tmp_path / "results", run_id="second")
    again = _predictions(second.run_dir)
    assert ({c.example_id: c.text for c in again} == {c.example_id: c.text for c in _predictions(first.run_dir)})
    assert {c.cached_from for c in again} == {"first"} and all(c.e2e_s is None and c.ttft_s is None for c in again)
    record = RunDir(second.run_dir).read_run()
    assert record.cache.answers["tiny"]["keywords"].model_dump() == {"generated": 0, "reused": 12,
                                                                     "from_runs": {"first": 12}}
    assert "content sha256" in record.cache.weights["tiny"]
    values = {r.metric: r.value for r in second.results}
    assert values["accuracy"] == {r.metric: r.value for r in first.results}["accuracy"]
    # Latency is never reused: no figure, and the latency criterion that passed is insufficient, saying why.
    assert all(values[m] != values[m] for m in ("e2e_ms_p50", "ttft_ms_p90"))
    (verdict,) = second.verdicts
    assert verdict.status == "insufficient" and "12 of 12 answers of tiny on keywords came from the generation " \
        "cache" in verdict.evidence and "--no-cache" in verdict.evidence
    assert "12 of 12 answers came from the generation cache (run first)" in (second.run_dir / "report.md").read_text()


def test_a_changed_prompt_misses_and_no_cache_regenerates(tmp_path, talking_model, monkeypatch, capsys):
    from tests.test_cli import run_cli

    suite = _suite(tmp_path, talking_model)
    results = tmp_path / "results"
    run_suite(suite, results, run_id="first")
    task_file = tmp_path / "task" / "task.yaml"
    task = yaml.safe_load(task_file.read_text())
    task["prompt"]["template"] = "Message: {text}"
    task_file.write_text(yaml.safe_dump(task))
    changed = run_suite(suite, results, run_id="changed")
    assert {c.cached_from for c in _predictions(changed.run_dir)} == {None}
    assert all(c.e2e_s is not None for c in _predictions(changed.run_dir))

    stored = GenerationCache(ResultsDir(results).generations_db).info().answers
    assert stored == 24  # both prompts' answers
    code, err = run_cli(monkeypatch, capsys, "run", str(suite), "--results", str(results), "--run-id", "fresh",
                        "--no-cache")
    assert code == 0, err
    fresh = _predictions(results / "fresh")
    assert len(fresh) == 12 and {c.cached_from for c in fresh} == {None} and all(c.e2e_s for c in fresh)
    assert RunDir(results / "fresh").read_run().cache.enabled is False
    assert GenerationCache(ResultsDir(results).generations_db).info().by_run == {"first": 12, "changed": 12}


def test_failed_requests_are_never_cached(tmp_path):
    task = classification_task(tmp_path / "task", n_test=6)
    results = tmp_path / "results"
    with FakeServer(faults=[500] * 4, pieces=("billing",)) as server:
        suite = remote_suite(tmp_path / "suite.yaml", "flaky", task, server.url)
        assert run_suite(suite, results, run_id="a").failed_requests == 4
        assert GenerationCache(ResultsDir(results).generations_db).info().answers == 2
        b = run_suite(suite, results, run_id="b")
    assert b.failed_requests == 0 and len(server.requests) == 6 + 4, "only the failed ones are asked again"
    sources = [c.cached_from for c in RunDir(b.run_dir).read_predictions("remote", "keywords")]
    assert sources.count("a") == 2 and sources.count(None) == 4
    assert "name 'fake' only" in RunDir(b.run_dir).read_run().cache.weights["remote"]


def _crash_after(monkeypatch, answers: int) -> None:
    """A SIGTERM that lands after `answers` generated answers (an eviction, on cue)."""
    real = HFLocalBackend.generate

    def generate(self, requests, candidate, task):
        for n, completion in enumerate(real(self, requests, candidate, task), 1):
            yield completion
            if n == answers:
                raise Interrupted(signal.SIGTERM)

    monkeypatch.setattr(HFLocalBackend, "generate", generate)


def test_a_crash_loses_nothing_cached_and_resume_duplicates_nothing(tmp_path, talking_model, monkeypatch):
    suite = _suite(tmp_path, talking_model)
    results = tmp_path / "results"
    with monkeypatch.context() as patch:
        _crash_after(patch, 5)
        with pytest.raises(Interrupted):
            run_suite(suite, results, run_id="a")
    assert GenerationCache(ResultsDir(results).generations_db).info().by_run == {"a": 5}
    with monkeypatch.context() as patch:
        _crash_after(patch, 3)
        with pytest.raises(Interrupted):
            run_suite(suite, results, run_id="b")  # a's 5 reused, then 3 generated
    assert len(_predictions(results / "b")) == 8
    resumed = run_suite(suite, results, run_id="b", resume=True)
    answers = _predictions(resumed.run_dir)
    assert sorted(c.example_id for c in answers) == [f"ex{i:03d}" for i in range(12)], "each example once"
    counts = RunDir(resumed.run_dir).read_run().cache.answers["tiny"]["keywords"]
    assert (counts.reused, counts.generated, counts.from_runs) == (5, 7, {"a": 5})
    assert GenerationCache(ResultsDir(results).generations_db).info().by_run == {"a": 5, "b": 7}


def _cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    import sys

    from harness.cli import main

    monkeypatch.setattr(sys, "argv", ["harness", *args])
    with pytest.raises(SystemExit) as info:
        main()
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def test_cache_info_and_prune_say_what_the_cache_holds_and_what_was_removed(tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    cache = GenerationCache(ResultsDir(results).generations_db)
    for i, (run, model) in enumerate([("a", "m1"), ("a", "m2"), ("b", "m1"), ("b", "m1")]):
        cache.put(f"k{i}", Completion(f"e{i}", "c", "t", "x"), AnswerSource("c", model, "d", "w", 0), run)
    cache.db.execute("UPDATE answers SET created_at = '2020-01-01T00:00:00+00:00' WHERE key = 'k0'")
    cache.close()
    code, out, _ = _cli(monkeypatch, capsys, "cache", "info", "--results", str(results))
    assert code == 0 and "4 answers" in out and "m1: 3" in out and "b: 2" in out and "2020-01-01" in out
    code, _, err = _cli(monkeypatch, capsys, "cache", "prune", "--results", str(results))
    assert code == 2 and "give --older-than, --run or --model" in err
    code, out, _ = _cli(monkeypatch, capsys, "cache", "prune", "--results", str(results), "--older-than", "30")
    assert code == 0 and "removed 1 answers" in out and "a: 1" in out
    code, out, _ = _cli(monkeypatch, capsys, "cache", "prune", "--results", str(results), "--run", "b",
                        "--model", "m2")
    assert code == 0 and "removed 0 answers" in out
    code, out, _ = _cli(monkeypatch, capsys, "cache", "prune", "--results", str(results), "--model", "m1")
    assert code == 0 and "removed 2 answers" in out and "b: 2" in out
    assert GenerationCache(ResultsDir(results).generations_db).info().by_model == {"m2": 1}


def test_a_dropped_stream_is_a_failure_not_a_cached_answer(tmp_path):
    """A stream that ends without its end ([DONE], a finish reason) holds part of an answer: stored, every later run
    would reuse the fragment as the model's answer."""
    task = classification_task(tmp_path / "task", n_test=6)
    results = tmp_path / "results"
    with FakeServer(faults=[0] * 2, pieces=("bill", "ing")) as server:
        suite = remote_suite(tmp_path / "suite.yaml", "dropped", task, server.url)
        assert run_suite(suite, results, run_id="a").failed_requests == 2
    cache = GenerationCache(ResultsDir(results).generations_db)
    assert cache.info().answers == 4
    assert {t for (t,) in cache.db.execute("SELECT text FROM answers")} == {"billing"}


def test_sampled_answers_to_the_same_prompt_are_kept_apart(tmp_path):
    """At temperature > 0 two examples with the same prompt are two samples: a rerun gives each its own, not the
    first one's to both (duplicates in a test set would then agree perfectly and narrow every interval)."""
    task = classification_task(tmp_path / "task", n_test=4, generation={"max_new_tokens": 4, "temperature": 0.7})
    write_jsonl(tmp_path / "task" / "test.jsonl", [{"id": f"ex{i}", "text": "my card", "label": "billing"}
                                                   for i in range(4)])
    results = tmp_path / "results"
    replies = iter(["billing", "delivery", "password", "billing"] * 2)
    with FakeServer(reply=lambda _body: next(replies)) as server:
        suite = write_yaml(tmp_path / "suite.yaml", {
            "name": "sampled", "tasks": [str(task)],
            "candidates": [{"name": "remote", "backend": "openai", "url": server.url, "model": "fake",
                            "concurrency": 1}],
            "bootstrap": {"resamples": 100}})
        runs = [run_suite(suite, results, run_id=run_id) for run_id in ("a", "b")]
    assert len(server.requests) == 4, "the rerun reuses every sample"
    texts = [{c.example_id: c.text for c in RunDir(r.run_dir).read_predictions("remote", "keywords")} for r in runs]
    assert texts[1] == texts[0] and sorted(texts[0].values()) == ["billing", "billing", "delivery", "password"]
