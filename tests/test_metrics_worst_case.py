"""A failed request never improves a candidate's figure: `Metric.worst_case` counts it at least as badly as any
answer could have scored, for every metric the gate reads.

Each scenario is one candidate's answers; the same requests are then either answered badly (every combination of
several bad answers) or failed (error set, no text, no timing). A scale without a known worst (an `evaluate`
module's, a corpus BLEU's, a mean with no end on its bad side) has none: its criteria are insufficient instead.
"""

from __future__ import annotations

import itertools
import math
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from harness.config import JudgeMetricSpec, load_task
from harness.errors import ConfigError
from harness.manifest_check import check_against
from harness.manifest_spec import Manifest
from harness.metrics import METRICS, ScoringInput, TaskMetrics, get_metric
from harness.metrics.base import Metric
from harness.metrics.defined import task_metrics
from harness.metrics.latency import RequestPercentile
from harness.metrics.rubric_judge import SCALE_RANGES, JudgeScore
from harness.records import Judgement
from tests.conftest import qa_task, write_yaml
from tests.helpers import scoring_input


@dataclass
class Scenario:
    data: ScoringInput
    rows: list[int]  # the requests that fail
    bad: list[list[dict[str, Any]]]  # ways the same requests could have been answered badly: fields per row

    @property
    def mask(self) -> np.ndarray:
        return np.isin(np.arange(len(self.data.examples)), self.rows)

    def answered(self, fields: list[dict[str, Any]]) -> ScoringInput:
        comps = list(self.data.completions)
        for row, change in zip(self.rows, fields, strict=True):
            comps[row] = replace(comps[row], **change)
        return replace(self.data, completions=comps)

    def failed(self) -> ScoringInput:
        return self.answered([{"text": "", "error": "timeout", "ttft_s": None, "e2e_s": None, "itl_s": [],
                               "completion_tokens": None}] * len(self.rows))


def _combinations(*answers: str) -> list[list[dict[str, Any]]]:
    return [[{"text": a}, {"text": b}] for a, b in itertools.product(answers, repeat=2)]


LABELS = ["billing", "refund", "delivery", "cancel", "other"]  # "other" is neither a reference nor an answer


def classification() -> Scenario:
    refs = ["billing", "refund", "delivery", "cancel", "billing", "refund", "delivery", "billing", "refund", "cancel"]
    texts = [*refs[:4], "refund", *refs[5:9], "not sure"]  # one wrong label, one invalid answer
    return Scenario(scoring_input(texts, refs, labels=LABELS), [1, 6], _combinations(*LABELS, "no idea"))


RAMBLING = ("well it depends on many things such as the weight and the size of it and the season and whether you "
            "are a member so please ask again some other time")


def text() -> Scenario:
    refs = ["the parcel left the depot on monday morning", "your refund was sent yesterday", "the store opens at nine",
            "cancel the order from the account page", "the card arrives within five days",
            "delivery is free over fifty euros", "we ship to most countries", "returns are accepted for thirty days"]
    texts = ["the parcel left on monday", "the refund was sent yesterday", RAMBLING,
             "you can cancel the order from the account page", "the card arrives in five days",
             "delivery is free above fifty euros", "we ship to many countries",
             "returns are accepted within thirty days"]
    # The failed rows' references are longer than the rambling answer's: it is no worse on any per-answer scale.
    unmatched = "lorem ipsum dolor sit amet consectetur adipiscing"  # about as long as their references, no word shared
    return Scenario(scoring_input(texts, refs), [0, 3],
                    _combinations("", unmatched, RAMBLING, "the parcel left", "cancel the order from the account page"))


PASSAGE = "Arthur's Magazine (1844-1846) was an American literary periodical published in Philadelphia."


def hallucination() -> Scenario:
    answers = ["Philadelphia", "It was published in Philadelphia.", "an American literary periodical", "1844",
               "Philadelphia", "The passage does not say."]
    data = scoring_input(answers, ["Philadelphia"] * 6, inputs=[{"knowledge": PASSAGE, "question": "Where?"}] * 6)
    return Scenario(data, [1, 4], _combinations("Boston, 1900", "The passage does not say.", "Philadelphia"))


def latency() -> Scenario:
    rng = np.random.default_rng(7)
    n, tokens = 12, 20
    ttft = list(rng.uniform(0.05, 0.2, n))
    itl = [list(rng.uniform(0.02, 0.08, tokens - 1)) for _ in range(n)]
    e2e = [t + sum(gaps) for t, gaps in zip(ttft, itl, strict=True)]
    data = scoring_input(["x"] * n, ["x"] * n, ttft_s=ttft, e2e_s=e2e, itl_s=itl, completion_tokens=[tokens] * n)
    rows = [3, 8]
    slowest = max(e for i, e in enumerate(e2e) if i not in rows)  # a bad request no slower than one answered
    slow = {"ttft_s": slowest / 2, "e2e_s": slowest, "completion_tokens": tokens,
            "itl_s": [slowest / 2 / (tokens - 1)] * (tokens - 1)}
    stalled = {"ttft_s": 0.1, "e2e_s": slowest, "completion_tokens": 2, "itl_s": [slowest - 0.1]}
    usual = {"ttft_s": ttft[0], "e2e_s": e2e[0], "completion_tokens": tokens, "itl_s": itl[0]}
    return Scenario(data, rows, [list(pair) for pair in itertools.product([slow, stalled, usual], repeat=2)])


def _scenario(metric: Metric) -> Scenario:
    if "labels" in metric.needs:
        return classification()
    if "source" in metric.needs:
        return hallucination()
    if "latency" in metric.needs:
        return latency()
    assert metric.needs == {"reference"}, f"no scenario for a metric that needs {sorted(metric.needs)}"
    return text()


def _value(metric: Metric, stats: np.ndarray | None, n: int) -> float:
    assert stats is not None
    return metric.value(stats, n)


def _not_better(metric: Metric, worst: float, bad: float) -> bool:
    assert not math.isnan(worst) and not math.isnan(bad)
    return worst <= bad + 1e-9 if metric.higher_is_better else worst >= bad - 1e-9


# A failed request may be the runaway answer or the endless wait that timed out: for these no worst is known (an
# unmatched answer lowers a corpus score more the longer it is; tokens per second fall with the unknown timeout).
UNKNOWN_WORST = {"bleu", "chrf", "output_tokens_per_s"}


def _assert_never_better(metric: Metric, scenario: Scenario) -> None:
    n = len(scenario.data.examples)
    worst = metric.worst_case(metric.stats(scenario.failed()), scenario.mask)
    if metric.name in UNKNOWN_WORST:
        assert worst is None, f"{metric.name} claims a worst it cannot know"
        return
    assert worst is not None, f"{metric.name} does not know its worst"
    for fields in scenario.bad:
        bad = metric.value(metric.stats(scenario.answered(fields)), n)
        assert _not_better(metric, _value(metric, worst, n), bad), (metric.name, fields, _value(metric, worst, n), bad)


# Built-in metrics of answers: tasks define `evaluate` and judge metrics (tested below); the ratings metrics come
# from reviewers' ratings of answers that exist (the gate refuses them on failed requests instead).
BUILT_IN = sorted(name for name, m in METRICS.items() if "ratings" not in m.needs)


@pytest.mark.parametrize("name", BUILT_IN)
def test_a_failed_request_scores_no_better_than_any_bad_answer(name):
    _assert_never_better(get_metric(name), _scenario(get_metric(name)))


# --- per family: the exact worst statistics ---


def test_a_failed_classification_is_a_wrong_label_placed_where_it_lowers_f1_most():
    s = classification()
    k, n = len(LABELS), len(s.data.examples)
    for name in ("macro_f1", "micro_f1"):
        metric = get_metric(name)
        stats = metric.stats(s.failed())
        worst = metric.worst_case(stats, s.mask)
        assert worst is not None
        assert np.array_equal(worst[~s.mask], stats[~s.mask])
        for row in s.rows:
            true = LABELS.index(s.data.examples[row].reference)
            # a miss for its true label and one false positive, on another label
            assert worst[row, 2 * k:].tolist() == np.eye(k)[true].tolist() and worst[row, :k].sum() == 0
            assert worst[row, k:2 * k].sum() == 1 and worst[row, k + true] == 0
        # As low as the lowest any wrong labels for these rows give.
        refs = [s.data.examples[row].reference for row in s.rows]
        wrong = [[{"text": label} for label in labels] for labels in itertools.product(LABELS, repeat=len(s.rows))
                 if all(label != ref for label, ref in zip(labels, refs, strict=True))]
        lowest = min(metric.value(metric.stats(s.answered(fields)), n) for fields in wrong)
        assert metric.value(worst, n) == pytest.approx(lowest)


def test_a_failed_classification_with_a_single_label_is_a_miss():
    data = scoring_input(["yes", "yes", "no"], ["yes", "yes", "yes"], labels=["yes"])
    metric = get_metric("macro_f1")
    worst = metric.worst_case(metric.stats(data), np.array([False, True, False]))
    assert worst is not None and worst[1].tolist() == [0, 0, 1]  # no wrong label to name: the miss alone


@pytest.mark.parametrize("name", ["rouge1", "rouge2", "rouge_l", "exact_match", "token_f1"])
def test_a_failed_text_scores_zero_per_answer(name):
    s = text()
    metric = get_metric(name)
    worst = metric.worst_case(metric.stats(s.failed()), s.mask)
    assert worst is not None and metric.per_example(worst)[s.rows].tolist() == [0.0, 0.0]


def test_a_failed_request_is_as_many_missed_gaps_as_an_answered_one_has():
    s = latency()
    # Drop a gap from every other answered request: 19 and 18 gaps, 18.5 on average, counted as 19.
    comps = [replace(c, itl_s=c.itl_s[:-1]) if i % 2 else c for i, c in enumerate(s.data.completions)]
    failed = Scenario(replace(s.data, completions=comps), s.rows, []).failed()
    for q in (50, 90, 99):
        metric = get_metric(f"itl_ms_p{q}")
        stats = metric.stats(failed)
        worst = metric.worst_case(stats, s.mask)
        assert worst is not None
        assert worst[:len(stats)].tolist() == stats.tolist()
        added = worst[len(stats):]
        assert sorted(added[:, 0].tolist()) == [3.0] * 19 + [8.0] * 19 and np.isposinf(added[:, 1]).all()
        assert metric.count(worst) == metric.count(stats) + 2  # the failed requests count, as requests


def test_a_failed_request_with_gaps_kept_counts_only_its_missed_ones():
    metric = get_metric("itl_ms_p50")
    stats = np.array([(0, 10.0), (0, 20.0), (1, 30.0), (1, 40.0), (2, 50.0)])
    worst = metric.worst_case(stats, np.array([False, True, False]))
    assert worst is not None
    assert worst[:, 0].tolist() == [0, 0, 2, 1, 1] and worst[:3, 1].tolist() == [10, 20, 50]
    assert np.isposinf(worst[3:, 1]).all()


def test_an_inter_token_criterion_on_few_requests_is_refused_before_any_work(tmp_path):
    task = load_task(str(write_yaml(tmp_path / "qa" / "task.yaml", {
        "name": "qa", "kind": "generation", "data": {"test": "x.jsonl", "inputs": {"q": "q"}, "reference": "r"},
        "prompt": {"template": "{q}"}, "metrics": ["exact_match"]})))
    metrics = {"qa": task_metrics(task)}
    median = Manifest.model_validate({"criteria": [
        {"task": "qa", "metric": "itl_ms_p50", "candidate": "ft", "at_most": 50}]})
    # A request's many gaps are not many requests: the bound needs as many requests as e2e_ms_p50 does.
    with pytest.raises(ConfigError, match=r"criteria\.0: qa has 5 test examples; itl_ms_p50 needs at least 6"):
        check_against(median, "m.yaml", {"qa": ["ft"]}, metrics, {"qa": 5})
    check_against(median, "m.yaml", {"qa": ["ft"]}, metrics, {"qa": 6})


@pytest.mark.parametrize("name", [m for m in BUILT_IN if isinstance(get_metric(m), RequestPercentile)])
def test_a_failed_request_is_an_infinite_latency(name):
    s = latency()
    metric = get_metric(name)
    worst = metric.worst_case(metric.stats(s.failed()), s.mask)
    assert worst is not None and np.isposinf(worst[s.rows, 0]).all()


# --- evaluate modules: the worst answer seen; a corpus-level module does not know its worst ---

MODULES = Path(__file__).parent / "evaluate_modules"
OWN_CASE = Path(__file__).resolve().parents[1] / "examples" / "own-case"


def _define(tmp_path: Path, *metrics: dict) -> TaskMetrics:
    from harness.plan import _check_task

    for module in [OWN_CASE / "word_overlap.py", MODULES / "length_ratio.py"]:
        shutil.copy(module, tmp_path / module.name)
    path = qa_task(tmp_path)
    task = yaml.safe_load(path.read_text())
    task["metrics"] = ["exact_match", *metrics]
    return _check_task(load_task(str(write_yaml(path, task))))


def test_an_evaluate_metric_cannot_say_what_its_worst_is(tmp_path):
    """A module's scale is its own: the worst answer seen is not the worst possible (a runaway answer that timed out
    can score lower than any), so any failure leaves its criteria insufficient."""
    defined = _define(tmp_path, {"evaluate": "word_overlap.py", "name": "overlap_wc"},
                      {"evaluate": "length_ratio.py", "name": "ratio_corpus_wc", "key": "ratio", "per_example": False,
                       "higher_is_better": False})
    s = text()
    for name in ("overlap_wc", "ratio_corpus_wc"):
        metric = defined[name]
        assert metric.worst_case(metric.stats(s.failed()), s.mask) is None


# --- judge metrics: no verdict the judge could give scores lower ---


@pytest.mark.parametrize(("form", "verdicts"), [("1-5", [1.0, 2.0, 3.0, 4.0, 5.0]), ("pass_fail", [0.0, 1.0]),
                                                ("pairwise", [0.0, 0.5, 1.0])])
def test_a_failed_request_scores_no_better_than_any_verdict(form, verdicts):
    spec = JudgeMetricSpec(name="judged_wc", judge="j", rubric="x", scale="pass_fail" if form == "pass_fail" else "1-5",
                           against="b" if form == "pairwise" else None)
    metric = JudgeScore(name="judged_wc", spec=spec, rubric="x", unparsed="judged_wc_unparsed",
                        value_range=SCALE_RANGES[form])
    data, rows = scoring_input(["a", "b", "c", "d"], ["a"] * 4), [1, 2]
    mask = np.isin(np.arange(4), rows)

    def judged(scores: list[float | None]) -> ScoringInput:
        return replace(data, judgements={"judged_wc": [Judgement(score) for score in scores]})

    # The failed requests' empty answers were given the judge's best verdict, and then none at all.
    for failed in ([3.0, verdicts[-1], verdicts[-1], 3.0], [3.0, None, None, 3.0]):
        worst = metric.worst_case(metric.stats(judged(failed)), mask)
        for bad in itertools.product(verdicts, repeat=len(rows)):
            answered = metric.stats(judged([3.0, *bad, 3.0]))
            assert _value(metric, worst, 4) <= metric.value(answered, 4), (form, failed, bad)
