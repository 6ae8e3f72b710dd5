"""One registration per extension point: registries refuse duplicates and name what exists; a metric is
one instance that the planner, scorer, gate and reports pick up from its declaration alone."""

import dataclasses

import numpy as np
import pytest

from harness import report
from harness.backends import BACKENDS
from harness.config import Candidate, load_task
from harness.detectors import DETECTORS
from harness.errors import ConfigError
from harness.evaluation import latency_summary
from harness.manifest_check import check_against
from harness.manifest_spec import Manifest
from harness.metrics import METRICS, MeanOf, ScoringInput, TaskMetrics
from harness.plan import _check_task
from harness.records import Completion, Example
from harness.registry import Registry, UnknownName
from harness.scoring import TaskEvidence
from tests.conftest import write_yaml


def test_a_registry_refuses_a_second_entry_and_names_the_known_ones():
    reg: Registry[int] = Registry("widget")
    reg.add("a", 1)
    with pytest.raises(ValueError, match="widget 'a' registered twice"):
        reg.add("a", 2)
    with pytest.raises(UnknownName, match="unknown widget 'b'; known: a"):
        reg["b"]


def test_a_scoped_entry_is_there_for_the_block_only():
    reg: Registry[int] = Registry("widget")
    reg.add("a", 1)
    with reg.scoped({"b": 2, "c": 3}):
        assert reg.names() == ["a", "b", "c"] and reg["b"] == 2
    assert reg.names() == ["a"]
    with pytest.raises(RuntimeError), reg.scoped({"b": 2}):
        raise RuntimeError  # a failing test leaves nothing behind either
    assert "b" not in reg
    # A name already there is refused before anything is added.
    with pytest.raises(ValueError, match="widget 'a' registered twice"), reg.scoped({"d": 4, "a": 5}):
        pass
    assert reg.names() == ["a"] and reg["a"] == 1


def test_every_metric_declares_what_it_is_and_needs():
    vocabulary = {"labels", "reference", "source", "detector", "latency", "ratings", "judge"}
    for name, metric in METRICS.items():
        assert metric.name == name and metric.family, name
        assert set(metric.needs) <= vocabulary, name
        # One instance serves every task and candidate: nothing can be kept on it between calls.
        with pytest.raises(dataclasses.FrozenInstanceError):
            metric.name = "other"  # type: ignore[misc]
    automatic = [n for n, m in METRICS.items() if m.automatic]
    assert automatic == [n for n, m in METRICS.items() if m.family == "latency"]
    assert {"ttft_ms_p50", "itl_ms_p99", "e2e_ms_p95", "output_tokens_per_s", "error_rate"} <= set(automatic)
    # Only built-in metrics are registered: the ones tasks define stay with their tasks.
    assert {n for n, m in METRICS.items() if "ratings" in m.needs} == {
        "human_rating", "human_win_rate", "hallucination_rate_corrected", "abstention_rate_corrected"}
    # Each corrected metric corrects a registered one that says how a reviewer labels an answer for it.
    assert all(METRICS[m.reads].labelling() is not None for m in METRICS.values() if m.family == "corrected")
    assert {n for n, m in METRICS.items() if "detector" in m.needs} == {"hallucination_rate", "abstention_rate",
                                                                        "detector_unparsed"}
    assert not {"evaluate", "judge"} & {m.family for m in METRICS.values()}
    # A metric fed by a machine's verdicts names the registered metric that counts its missing ones.
    assert all(m.unparsed in METRICS for m in METRICS.values() if m.unparsed), "unparsed names an unknown metric"


def test_backends_and_detectors_register_their_options():
    assert BACKENDS.names() == ["hf", "openai", "vllm"]
    assert DETECTORS.names() == ["grounding", "judge", "nli"]
    for name, options in BACKENDS.items():
        fields = {"backend": name, **({"url": "http://127.0.0.1:9"} if name == "openai" else {})}
        cand = Candidate.model_validate({"name": "c", "model": "m", **fields})
        assert type(cand.options) is options and cand.backend == name
        assert Candidate.model_validate(cand.model_dump(mode="json")) == cand
    assert BACKENDS["hf"].local_weights and BACKENDS["vllm"].local_weights and not BACKENDS["openai"].local_weights
    assert BACKENDS["openai"].served and BACKENDS["vllm"].served and not BACKENDS["hf"].served


def answer_words(data: ScoringInput) -> np.ndarray:
    """A team's own metric: the answer's length in words."""
    return np.array([len(t.split()) for t in data.texts], float)


ANSWER_WORDS = MeanOf(name="answer_words", family="text", higher_is_better=False, decimals=1, value_range=(0, 1e6),
                      needs=frozenset({"reference"}), fn=answer_words)


def test_a_new_metric_is_one_instance(tmp_path):
    task = load_task(str(write_yaml(tmp_path / "qa" / "task.yaml", {
        "name": "qa", "kind": "generation", "data": {"test": "x.jsonl", "inputs": {"q": "q"}, "reference": "r"},
        "prompt": {"template": "{q}"}, "metrics": ["exact_match", "answer_words"]})))
    with METRICS.scoped({ANSWER_WORDS.name: ANSWER_WORDS}):  # as `register(ANSWER_WORDS)` in its module would
        metrics = _check_task(task)  # the planner accepts it: the task has the reference it needs
        _picked_up_from_its_declaration(task, metrics)
    with pytest.raises(ConfigError, match="unknown metric 'answer_words'"):
        _check_task(task)


def _picked_up_from_its_declaration(task, metrics):
    """The scorer, the manifest and the reports take the new metric as any built-in one."""
    examples = [Example(f"e{i}", {"q": str(i)}, "yes") for i in range(40)]
    completions = {cand: [Completion(f"e{i}", cand, "qa", " ".join(["word"] * (words + i % 3)), e2e_s=0.1,
                                     ttft_s=0.01, completion_tokens=3) for i in range(40)]
                   for cand, words in (("short", 1), ("long", 4))}
    evidence = TaskEvidence(task, examples, None, completions, resamples=500, seed=0, metrics=metrics)
    results = {(r.candidate, r.metric): r for r in evidence.results(0.95)}
    assert results[("short", "answer_words")].value == pytest.approx(np.mean([1 + i % 3 for i in range(40)]))
    assert not results[("short", "answer_words")].higher_is_better
    diff = next(c for c in evidence.comparisons(0.95) if c.metric == "answer_words")
    assert diff.delta == pytest.approx(3.0) and diff.ci_low == pytest.approx(3.0)
    assert report.fmt(results[("long", "answer_words")].value, "answer_words") == "5.0"
    # the manifest can name it, and it stays out of latency.json
    criterion = Manifest.model_validate({"criteria": [{"task": "qa", "metric": "answer_words", "candidate": "long",
                                                       "at_most": 10}]})
    check_against(criterion, "m.yaml", {"qa": ["short", "long"]}, {"qa": metrics})
    summary = latency_summary(list(results.values()), {"qa": metrics})
    assert summary["long"]["qa"]["e2e_ms"]["p50"] == pytest.approx(100.0)
    assert all("answer_words" not in tasks["qa"] for tasks in summary.values())


def test_a_new_metric_that_needs_labels_is_refused_on_a_generation_task(tmp_path):
    task = load_task(str(write_yaml(tmp_path / "qa" / "task.yaml", {
        "name": "qa", "kind": "generation", "data": {"test": "x.jsonl", "inputs": {"q": "q"}, "reference": "r"},
        "prompt": {"template": "{q}"}, "metrics": ["answer_words"]})))
    labelled = dataclasses.replace(ANSWER_WORDS, needs=frozenset({"labels"}))
    with METRICS.scoped({labelled.name: labelled}), pytest.raises(ConfigError, match="metric 'answer_words' needs "
                                                                                     "the task to define labels"):
        _check_task(task)


def test_a_human_metric_in_a_criterion_needs_no_task_listing_but_refuses_a_baseline():
    ok = Manifest.model_validate({"criteria": [{"task": "qa", "metric": "human_rating", "candidate": "a",
                                                "at_least": 3}]})
    check_against(ok, "m.yaml", {"qa": ["a", "b"]}, {"qa": TaskMetrics(("exact_match",))})
    relative = Manifest.model_validate({"criteria": [{"task": "qa", "metric": "human_win_rate", "candidate": "a",
                                                      "better_than": "b"}]})
    with pytest.raises(ConfigError, match="human_win_rate takes at_least or at_most"):
        check_against(relative, "m.yaml", {"qa": ["a", "b"]}, {"qa": TaskMetrics(("exact_match",))})
