import numpy as np
import pytest

from harness.backends.base import Completion
from harness.config import load_task
from harness.data import Example
from harness.errors import ConfigError
from harness.manifest import resolve, verdict_record
from harness.manifest_check import check_against, load_manifest
from harness.manifest_spec import Manifest
from harness.metrics import TaskMetrics
from harness.metrics.defined import task_metrics
from harness.scoring import TaskEvidence
from tests.conftest import write_yaml

N = 100


def _task(tmp_path, name="qa"):
    return load_task(str(write_yaml(tmp_path / name / "task.yaml", {
        "name": name, "kind": "generation", "data": {"test": "x.jsonl", "inputs": {"q": "q"}, "reference": "r"},
        "prompt": {"template": "{q}"}, "metrics": ["exact_match"]})))


def _evidence(tmp_path, right: dict[str, np.ndarray], e2e_ms: dict[str, float], name="qa") -> TaskEvidence:
    examples = [Example(f"e{i}", {"q": str(i)}, "yes") for i in range(N)]
    completions = {
        cand: [Completion(f"e{i}", cand, name, "yes" if ok else "no", completion_tokens=5, ttft_s=0.01,
                          e2e_s=e2e_ms[cand] / 1000 * (1 + i / 1000)) for i, ok in enumerate(r)]
        for cand, r in right.items()
    }
    task = _task(tmp_path, name)
    return TaskEvidence(task, examples, None, completions, resamples=2000, seed=0, metrics=task_metrics(task))


@pytest.fixture
def evidence(tmp_path):
    ft = np.arange(N) % 10 != 0          # 0.90
    base = np.arange(N) % 10 < 6         # 0.60, right where ft is right but for 0 (wrong for both)
    twin = ft.copy()
    twin[1] = False                      # 0.89
    return {"qa": _evidence(tmp_path, {"base": base, "ft": ft, "twin": twin},
                            {"base": 200.0, "ft": 100.0, "twin": 100.0})}


def _verdicts(evidence, *criteria, **manifest):
    return resolve(Manifest.model_validate({"criteria": list(criteria), **manifest}), evidence)


@pytest.mark.parametrize(("criterion", "status"), [
    ({"at_least": 0.80}, "pass"),
    ({"at_least": 0.92}, "insufficient"),
    ({"at_least": 0.99}, "fail"),
    ({"at_most": 0.99}, "pass"),
    ({"better_than": "base", "by": 0.10}, "pass"),
    ({"better_than": "base", "by": 0.30}, "insufficient"),
    ({"better_than": "base", "by": 0.45}, "fail"),
    ({"not_worse_than": "twin", "margin": 0.05}, "pass"),
])
def test_statuses(evidence, criterion, status):
    (v,) = _verdicts(evidence, {"task": "qa", "metric": "exact_match", "candidate": "ft", **criterion})
    assert v.status == status, v.evidence
    assert v.n == N and v.ci_low <= v.observed <= v.ci_high


def test_insufficient_says_how_many_examples_would_settle_it(evidence):
    (v,) = _verdicts(evidence, {"task": "qa", "metric": "exact_match", "candidate": "ft", "at_least": 0.87})
    assert v.status == "insufficient"
    # half-width ≈ 0.06 and gap 0.03: about four times the examples.
    assert 250 <= v.examples_needed <= 700 and f"about {v.examples_needed} examples" in v.evidence


def test_lower_is_better_metrics_improve_downwards(evidence):
    (faster,) = _verdicts(evidence, {"task": "qa", "metric": "e2e_ms_p50", "candidate": "ft", "better_than": "base",
                                     "by": 50})
    assert faster.status == "pass" and faster.observed == pytest.approx(100, rel=0.05)
    (slower,) = _verdicts(evidence, {"task": "qa", "metric": "e2e_ms_p50", "candidate": "base",
                                     "not_worse_than": "ft", "margin": 10})
    assert slower.status == "fail"
    (budget,) = _verdicts(evidence, {"task": "*", "metric": "e2e_ms_p95", "candidate": "ft", "at_most": 150})
    assert budget.status == "pass" and budget.task == "qa"


def test_min_examples_blocks_a_pass(evidence):
    (v,) = _verdicts(evidence, {"task": "qa", "metric": "exact_match", "candidate": "ft", "at_least": 0.5},
                     min_examples=500)
    assert v.status == "insufficient" and "min_examples 500" in v.evidence


def test_star_expands_to_every_task(evidence, tmp_path):
    evidence["other"] = _evidence(tmp_path, {c: np.ones(N, bool) for c in ("base", "ft", "twin")},
                                  {c: 100.0 for c in ("base", "ft", "twin")}, name="other")
    verdicts = _verdicts(evidence, {"task": "*", "metric": "exact_match", "candidate": "ft", "at_least": 0.8})
    assert [v.task for v in verdicts] == ["qa", "other"]


def test_human_metrics_wait_for_ratings(evidence):
    (v,) = _verdicts(evidence, {"task": "qa", "metric": "human_rating", "candidate": "ft", "at_least": 4})
    assert v.status == "insufficient" and "no human ratings" in v.evidence


def test_human_metrics_resolve_from_ratings(evidence):
    from harness.manifest import resolve
    from harness.ratings import HumanRatings, Preference, Score

    good = [Score("run", "qa", f"e{i}", "ft", r, 5, 5, 4) for i in range(30) for r in ("ada", "bob")]
    wins = [Preference("run", "qa", f"e{i}", "base", "ft", "ada", "B" if i % 4 else "tie") for i in range(40)]
    manifest = Manifest.model_validate({"criteria": [
        {"task": "qa", "metric": "human_rating", "candidate": "ft", "at_least": 4},
        {"task": "qa", "metric": "human_rating", "candidate": "ft", "at_most": 3},
        {"task": "qa", "metric": "human_win_rate", "candidate": "ft", "at_least": 0.6},
        {"task": "qa", "metric": "human_rating", "candidate": "base", "at_least": 3}]})
    rating, capped, win, none = resolve(manifest, evidence, HumanRatings(good, wins))
    assert (rating.status, rating.n, rating.observed) == ("pass", 30, pytest.approx(14 / 3))
    assert capped.status == "fail"
    assert win.status == "pass" and win.observed == pytest.approx((30 + 10 * 0.5) / 40) and win.n == 40
    assert none.status == "insufficient" and "no human ratings" in none.evidence


def test_a_win_rate_against_a_named_opponent_counts_only_their_comparisons(evidence, tmp_path):
    """Pooled, ft's wins over a weak base hide its losses to a strong twin; named, each opponent is its own verdict."""
    from harness.ratings import HumanRatings, Preference

    over_base = [Preference("run", "qa", f"e{i}", "base", "ft", "ada", "B") for i in range(40)]
    over_twin = [Preference("run", "qa", f"e{i}", "ft", "twin", "ada", "B" if i % 4 else "A") for i in range(40)]
    manifest = Manifest.model_validate({"criteria": [
        {"task": "qa", "metric": "human_win_rate", "candidate": "ft", "at_least": 0.55},
        {"task": "qa", "metric": "human_win_rate", "candidate": "ft", "against": "base", "at_least": 0.55},
        {"task": "qa", "metric": "human_win_rate", "candidate": "ft", "against": "twin", "at_least": 0.55}]})
    pooled, base, twin = resolve(manifest, evidence, HumanRatings([], over_base + over_twin))
    # pooled, an item's two comparisons average: 1 where ft beat both, 0.5 where it lost to the twin
    assert pooled.status != "fail" and pooled.n == 40 and pooled.observed == pytest.approx(0.625), pooled
    assert (base.status, base.n, base.observed) == ("pass", 40, 1.0)
    assert (twin.status, twin.n, twin.observed) == ("fail", 40, pytest.approx(10 / 40))
    assert twin.criterion.endswith("of ft against twin >= 0.55")
    # Named opponents are checked like any candidate, and only a blind comparison has one.
    runs, metrics = {"qa": ["ft", "base"]}, {"qa": task_metrics(_task(tmp_path))}
    for rule, message in ((({"against": "nobody"}), "criteria.0.against: the run has no candidate 'nobody'"),
                          ({"against": "ft"}, "compared with itself"),
                          ({"metric": "human_rating", "against": "base"}, "criteria.0.against: human_rating has no")):
        with pytest.raises((ConfigError, ValueError), match=message):
            check_against(Manifest.model_validate({"criteria": [
                {"task": "qa", "metric": "human_win_rate", "candidate": "ft", "at_least": 0.55, **rule}]}),
                "m.yaml", runs, metrics)


def test_human_metrics_take_absolute_thresholds_only(tmp_path):
    manifest = Manifest.model_validate({"criteria": [
        {"task": "qa", "metric": "human_rating", "candidate": "ft", "better_than": "base"}]})
    with pytest.raises(ConfigError, match="human_rating takes at_least or at_most"):
        check_against(manifest, "m.yaml", {"qa": ["ft", "base"]}, {"qa": task_metrics(_task(tmp_path))})


def test_holm_correction_demotes_a_marginal_pass(evidence):
    # Exact one-sided p-values (90 and 89 right of 100) about 0.0000, 0.015 and 0.017: each passes alone at 0.025,
    # the last two not after Holm (0.015 x 2 > 0.025).
    criteria = [{"task": "qa", "metric": "exact_match", "candidate": c, "at_least": t}
                for c, t in (("ft", 0.5), ("ft", 0.815), ("twin", 0.805))]
    plain = _verdicts(evidence, *criteria)
    corrected = _verdicts(evidence, *criteria, holm=True)
    assert [v.status for v in plain] == ["pass", "pass", "pass"]
    assert [v.status for v in corrected] == ["pass", "insufficient", "insufficient"]
    assert "Holm" in corrected[1].evidence
    assert all(c.p_value >= p.p_value for c, p in zip(corrected, plain, strict=True))
    record = verdict_record(Manifest.model_validate({"criteria": criteria, "holm": True}), corrected)
    assert record["passed"] is False and record["counts"]["insufficient"] >= 1


@pytest.mark.parametrize(("criterion", "message"), [
    ({"at_least": 0.8, "at_most": 0.9}, "exactly one of"),
    ({}, "exactly one of"),
    ({"at_least": "high"}, "valid number"),
    ({"at_least": 0.8, "by": 0.1}, "`by` goes with `better_than`"),
    ({"better_than": "base", "by": -1}, "greater than or equal"),
])
def test_bad_criteria_name_the_file_and_field(tmp_path, criterion, message):
    path = write_yaml(tmp_path / "manifest.yaml", {"criteria": [
        {"task": "qa", "metric": "exact_match", "candidate": "ft", **criterion}]})
    with pytest.raises(ConfigError) as info:
        load_manifest(path)
    assert "manifest.yaml: criteria.0" in str(info.value) and message in str(info.value)


@pytest.mark.parametrize(("change", "field"), [
    ({"task": "nope"}, "criteria.0.task"),
    ({"candidate": "nope"}, "criteria.0.candidate"),
    ({"metric": "bleu"}, "criteria.0.metric"),
    ({"at_least": None, "better_than": "nope"}, "criteria.0.better_than"),
])
def test_criteria_must_name_what_the_run_has(tmp_path, change, field):
    manifest = Manifest.model_validate({"criteria": [
        {"task": "qa", "metric": "exact_match", "candidate": "ft", "at_least": 0.8, **change}]})
    with pytest.raises(ConfigError, match=field):
        check_against(manifest, "m.yaml", {"qa": ["ft", "base"]}, {"qa": task_metrics(_task(tmp_path))})


def _with_failures(ev: TaskEvidence, candidate: str, ids: list[int]) -> TaskEvidence:
    """The same evidence with some of the candidate's requests failed (no text, no latency)."""
    comps = [Completion(c.example_id, c.candidate, c.task, "", error="HTTP 503") if i in ids else c
             for i, c in enumerate(ev.completions[candidate])]
    return TaskEvidence(ev.task, ev.examples, ev.labels, {**ev.completions, candidate: comps}, ev.resamples, ev.seed,
                        metrics=ev.metrics)


def test_failed_requests_make_the_candidates_criteria_insufficient_by_default(evidence):
    evidence["qa"] = _with_failures(evidence["qa"], "ft", [3, 5])
    criteria = [{"task": "qa", "metric": "exact_match", "candidate": "ft", "at_least": 0.5},
                {"task": "qa", "metric": "e2e_ms_p50", "candidate": "ft", "at_most": 1000},
                {"task": "qa", "metric": "exact_match", "candidate": "base", "not_worse_than": "ft", "margin": 0.5}]
    verdicts = _verdicts(evidence, *criteria)
    assert [v.status for v in verdicts] == ["insufficient"] * 3
    assert all("2 of 100 requests of ft on qa failed (e3, e5)" in v.evidence for v in verdicts)
    record = verdict_record(Manifest.model_validate({"criteria": criteria}), verdicts,
                            {"ft": {"qa": evidence["qa"].failed("ft")}})
    assert record["passed"] is False and record["failed_requests"] == {"ft": {"qa": ["e3", "e5"]}}


def test_failures_within_the_allowance_count_at_the_metrics_worst(evidence):
    evidence["qa"] = _with_failures(evidence["qa"], "ft", [0, 10, 1, 2])
    (latency, budget, quality) = _verdicts(
        evidence, {"task": "qa", "metric": "e2e_ms_p95", "candidate": "ft", "at_most": 150},
        {"task": "qa", "metric": "e2e_ms_p50", "candidate": "ft", "at_most": 150},
        {"task": "qa", "metric": "exact_match", "candidate": "ft", "at_least": 0.86}, max_error_rate=0.05)
    # Four of 100 requests with infinite latency: the p95's upper bound is infinite, so it cannot pass ...
    assert latency.status == "insufficient" and latency.ci_high == np.inf and "4 failed requests" in latency.evidence
    # ... while the median, far from the tail, still does.
    assert budget.status == "pass"
    # Two of the failures were right answers: 0.90 becomes 0.88 on the same examples, not 0.88 of the 96 answered.
    assert quality.observed == pytest.approx(0.88) and quality.n == N


def test_a_failed_request_counts_as_a_hallucination_not_an_abstention(tmp_path):
    task = load_task(str(write_yaml(tmp_path / "g" / "task.yaml", {
        "name": "g", "kind": "grounded_qa", "source": "passage",
        "data": {"test": "x.jsonl", "inputs": {"passage": "p", "q": "q"}, "reference": "r"},
        "prompt": {"template": "{passage} {q}"}, "metrics": ["hallucination_rate"]})))
    examples = [Example(f"e{i}", {"passage": "The capital of France is Paris.", "q": "capital?"}, "Paris")
                for i in range(N)]
    comps = [Completion(f"e{i}", "ft", "g", "Paris", completion_tokens=1, ttft_s=0.01, e2e_s=0.02)
             if i >= 10 else Completion(f"e{i}", "ft", "g", "", error="timeout") for i in range(N)]
    ev = {"g": TaskEvidence(task, examples, None, {"ft": comps}, resamples=1000, seed=0, metrics=task_metrics(task))}
    criterion = {"task": "g", "metric": "hallucination_rate", "candidate": "ft", "at_most": 0.02}
    (v,) = _verdicts(ev, criterion, max_error_rate=0.2)
    assert v.observed == pytest.approx(0.10) and v.status == "fail"
    (default,) = _verdicts(ev, criterion)
    assert default.status == "insufficient" and "10 of 100 requests of ft on g failed" in default.evidence


def test_min_examples_counts_values_that_exist(evidence, tmp_path):
    ev = evidence["qa"]
    comps = [Completion(c.example_id, c.candidate, c.task, c.text, completion_tokens=5, ttft_s=None,
                        e2e_s=c.e2e_s) for c in ev.completions["ft"]]
    evidence["qa"] = TaskEvidence(ev.task, ev.examples, None, {"ft": comps}, ev.resamples, ev.seed,
                                  metrics=ev.metrics)
    # Every request succeeded but none has a TTFT: 100 rows, no value.
    (v,) = _verdicts(evidence, {"task": "qa", "metric": "ttft_ms_p50", "candidate": "ft", "at_most": 1000},
                     min_examples=50)
    assert v.status == "insufficient" and v.n == 0


def test_gate_and_monitor_share_the_decision_at_the_threshold():
    from harness.manifest_spec import MonitorRule, MonitorSpec
    from harness.monitor import _status

    spec = MonitorSpec(min_rows=1)
    for low, high, threshold, gate_rule, alarm in [(0.5, 0.7, 0.7, "at_most", "insufficient"),
                                                   (0.5, 0.69, 0.7, "at_most", "ok"),
                                                   (0.7, 0.9, 0.7, "at_least", "insufficient"),
                                                   (0.71, 0.9, 0.7, "at_least", "ok"),
                                                   (0.6, 0.69, 0.7, "at_least", "alert")]:
        rule = MonitorRule.model_validate({"signal": "x", gate_rule: threshold})
        assert _status([rule], (low + high) / 2, low, high, None, 10, spec)[0] == alarm


def test_a_criterion_the_data_can_never_decide_is_refused_before_any_work(tmp_path):
    metrics = {"qa": task_metrics(_task(tmp_path))}
    floor = Manifest.model_validate({"min_examples": 500, "criteria": [
        {"task": "qa", "metric": "exact_match", "candidate": "ft", "at_least": 0.5}]})
    with pytest.raises(ConfigError, match=r"criteria\.0: qa has 133 test examples .* min_examples is 500"):
        check_against(floor, "m.yaml", {"qa": ["ft"]}, metrics, {"qa": 133})
    check_against(floor, "m.yaml", {"qa": ["ft"]}, metrics, {"qa": 500})
    tail = Manifest.model_validate({"criteria": [
        {"task": "qa", "metric": "exact_match", "candidate": "ft", "at_least": 0.5},
        {"task": "*", "metric": "e2e_ms_p99", "candidate": "ft", "at_most": 900}]})
    with pytest.raises(ConfigError, match=r"criteria\.1: qa has 200 test examples; e2e_ms_p99 needs at least 368"):
        check_against(tail, "m.yaml", {"qa": ["ft"]}, metrics, {"qa": 200})


def test_a_tail_percentile_of_few_requests_has_no_upper_bound(evidence):
    # 100 requests: enough for a bound on p95 (72) but not on p99 (368), which a bootstrap would have capped at
    # the largest latency seen, leaning towards a pass.
    (p95, p99) = _verdicts(evidence, {"task": "qa", "metric": "e2e_ms_p95", "candidate": "ft", "at_most": 150},
                           {"task": "qa", "metric": "e2e_ms_p99", "candidate": "ft", "at_most": 150})
    assert p95.status == "pass"
    assert p99.status == "insufficient" and p99.ci_high == np.inf and p99.examples_needed == 368


def test_a_baselines_failures_make_the_comparison_insufficient_not_smaller(evidence):
    # base fails exactly where ft is wrong: dropping those pairs would hide ft's misses.
    wrong = [i for i, c in enumerate(evidence["qa"].completions["ft"]) if c.text != "yes"]
    evidence["qa"] = _with_failures(evidence["qa"], "base", wrong)
    (v,) = _verdicts(evidence, {"task": "qa", "metric": "exact_match", "candidate": "ft", "better_than": "base",
                                "by": 0.1}, max_error_rate=0.5)
    assert v.status == "insufficient" and f"{len(wrong)} of 100 requests of base on qa failed" in v.evidence


def test_blind_comparisons_and_ratings_wait_for_every_failed_request(evidence):
    from harness.ratings import HumanRatings, Preference, Score

    good = [Score("run", "qa", f"e{i}", "ft", "ada", 5, 5, 5) for i in range(40)]
    wins = [Preference("run", "qa", f"e{i}", "base", "ft", "ada", "B") for i in range(40)]
    manifest = Manifest.model_validate({"max_error_rate": 0.1, "criteria": [
        {"task": "qa", "metric": "human_rating", "candidate": "ft", "at_least": 4},
        {"task": "qa", "metric": "human_win_rate", "candidate": "ft", "at_least": 0.6}]})
    assert [v.status for v in resolve(manifest, evidence, HumanRatings(good, wins))] == ["pass", "pass"]
    # The rival shown beside ft failed on some examples: its empty answers lose every blind comparison.
    evidence["qa"] = _with_failures(evidence["qa"], "base", [1, 2])
    rating, win = resolve(manifest, evidence, HumanRatings(good, wins))
    assert rating.status == "pass"
    assert win.status == "insufficient" and "requests of base on qa failed" in win.evidence
    evidence["qa"] = _with_failures(evidence["qa"], "ft", list(range(20)))
    rating, _ = resolve(manifest, evidence, HumanRatings(good, wins))
    assert rating.status == "insufficient" and "20 of 100 requests of ft on qa failed" in rating.evidence


def _grounded(tmp_path, hallucinated: np.ndarray, unparsed: np.ndarray) -> dict[str, TaskEvidence]:
    from harness.records import Finding

    task = load_task(str(write_yaml(tmp_path / "g" / "task.yaml", {
        "name": "g", "kind": "grounded_qa", "source": "passage",
        "data": {"test": "x.jsonl", "inputs": {"passage": "p", "q": "q"}, "reference": "r"},
        "prompt": {"template": "{passage} {q}"}, "metrics": ["hallucination_rate"]})))
    examples = [Example(f"e{i}", {"passage": "Paris.", "q": "city?"}, "Paris") for i in range(len(hallucinated))]
    comps = [Completion(ex.id, "ft", "g", "Berlin" if h else "Paris", completion_tokens=1, ttft_s=0.01, e2e_s=0.02)
             for ex, h in zip(examples, hallucinated, strict=True)]
    findings = [Finding(hallucinated=False, raw="…", error="no verdict in the judge's reply") if u
                else Finding(hallucinated=bool(h)) for h, u in zip(hallucinated, unparsed, strict=True)]
    return {"g": TaskEvidence(task, examples, None, {"ft": comps}, resamples=1000, seed=0,
                              findings={"ft": findings}, metrics=task_metrics(task))}


def test_missing_verdicts_under_the_limit_count_at_their_worst(tmp_path):
    # 400 answers, 14% hallucinated; the judge gave no verdict on 32 of the 56 hallucinated ones (8% of all, under
    # max_unparsed): left out, the rate would read 0.065 and pass at most 0.10.
    n = 400
    hallucinated = np.arange(n) % 50 < 7
    unparsed = hallucinated & (np.arange(n) % 50 < 4)
    evidence = _grounded(tmp_path, hallucinated, unparsed)
    reported = evidence["g"].interval("hallucination_rate", "ft", 0.95)
    assert reported.value == pytest.approx(24 / 368)
    (v,) = _verdicts(evidence, {"task": "g", "metric": "hallucination_rate", "candidate": "ft", "at_most": 0.10})
    assert v.observed == pytest.approx(56 / 400) and v.status == "fail"
    assert "32 failed requests or missing verdicts of ft counted at their worst" in v.evidence


def test_a_latency_criterions_p_value_is_the_order_statistics_own(evidence):
    from scipy.stats import binom

    threshold = 110.0  # above every latency seen: 0.95^100 = 0.006, where the bootstrap says 1/2001
    (v,) = _verdicts(evidence, {"task": "qa", "metric": "e2e_ms_p95", "candidate": "ft", "at_most": threshold})
    e2e = np.array([c.e2e_s * 1000 for c in evidence["qa"].completions["ft"]])
    below = int((e2e < threshold).sum())
    # The bootstrap's p-value would be 1/(B+1) whenever the threshold is above every latency seen.
    assert v.p_value == pytest.approx(binom.sf(below - 1, N, 0.95), rel=1e-3)


def test_a_star_criterion_that_no_task_can_decide_is_refused(tmp_path):
    metrics = {"a": task_metrics(_task(tmp_path)), "b": task_metrics(_task(tmp_path, "b"))}
    manifest = Manifest.model_validate({"criteria": [
        {"task": "*", "metric": "exact_match", "candidate": "ft", "better_than": "base"}]})
    with pytest.raises(ConfigError, match=r"criteria\.0\.task: no task scores ft and base together"):
        check_against(manifest, "m.yaml", {"a": ["ft"], "b": ["base"]}, metrics)
    # The tasks a `*` criterion does not reach are not checked for it: b is too small for a p50 but scores no ft.
    small = Manifest.model_validate({"criteria": [
        {"task": "*", "metric": "e2e_ms_p50", "candidate": "ft", "at_most": 100}]})
    check_against(small, "m.yaml", {"a": ["ft"], "b": ["base"]}, metrics, {"a": 100, "b": 5})
    from harness.manifest import passed
    assert not passed([])


def test_a_comparison_of_tail_latencies_uses_both_sides_order_statistics(evidence, tmp_path):
    metrics = {"qa": task_metrics(_task(tmp_path))}
    paired = Manifest.model_validate({"criteria": [
        {"task": "qa", "metric": "e2e_ms_p95", "candidate": "ft", "better_than": "base", "by": 50}]})
    with pytest.raises(ConfigError, match="e2e_ms_p95 needs at least 86"):
        check_against(paired, "m.yaml", {"qa": ["ft", "base"]}, metrics, {"qa": 50})
    (v,) = resolve(paired, evidence)
    ft, base = (evidence["qa"].interval("e2e_ms_p95", c, 0.975) for c in ("ft", "base"))
    assert (v.ci_low, v.ci_high) == pytest.approx((base.low - ft.high, base.high - ft.low))
    assert v.status == "pass"


def test_missing_rows_count_against_the_criterion_not_the_metric(tmp_path):
    # A canary rate: 12 of 100 answers say the secret ("yes"), and must be at most 0.05. Ten of the leaks failed
    # instead: at the metric's worst (0, a miss) they would make it 0.02 and pass.
    right = np.arange(N) < 12
    ev = _evidence(tmp_path, {"ft": right}, {"ft": 100.0})
    evidence = {"qa": _with_failures(ev, "ft", list(range(10)))}
    (v,) = _verdicts(evidence, {"task": "qa", "metric": "exact_match", "candidate": "ft", "at_most": 0.05},
                     max_error_rate=0.2)
    assert v.observed == pytest.approx(0.12) and v.status == "fail"


def test_a_rate_of_few_answers_takes_the_exact_binomial_interval(tmp_path):
    # 24 answers all right: a bootstrap says [1, 1] and passes at least 0.95; 24 of 24 is no such evidence.
    n = 24
    examples = [Example(f"e{i}", {"q": str(i)}, "yes") for i in range(n)]
    comps = [Completion(ex.id, "ft", "qa", "yes", completion_tokens=1, ttft_s=0.01, e2e_s=0.02) for ex in examples]
    task = _task(tmp_path)
    evidence = {"qa": TaskEvidence(task, examples, None, {"ft": comps}, resamples=1000, seed=0,
                                   metrics=task_metrics(task))}
    (v,) = _verdicts(evidence, {"task": "qa", "metric": "exact_match", "candidate": "ft", "at_least": 0.95})
    assert v.status == "insufficient" and v.ci_high == 1.0
    assert v.ci_low == pytest.approx(0.025 ** (1 / n))  # Clopper-Pearson's lower bound for n of n
    assert v.examples_needed > n


def test_one_rating_is_no_evidence_and_ratings_allow_no_failed_request(evidence):
    from harness.ratings import HumanRatings, Score

    one = [Score("run", "qa", "e0", "ft", "ada", 5, 5, 4)]
    criterion = {"task": "qa", "metric": "human_rating", "candidate": "ft", "at_least": 4}
    (v,) = resolve(Manifest.model_validate({"criteria": [criterion]}), evidence, HumanRatings(one, []))
    assert v.status == "insufficient" and v.n == 1
    many = [Score("run", "qa", f"e{i}", "ft", "ada", 5, 5, 5) for i in range(60)]
    evidence["qa"] = _with_failures(evidence["qa"], "ft", [7])
    (v,) = resolve(Manifest.model_validate({"max_error_rate": 0.1, "criteria": [criterion]}), evidence,
                   HumanRatings(many, []))
    assert v.status == "insufficient" and "above max_error_rate 0 for ratings" in v.evidence


def test_a_tail_of_pooled_inter_token_gaps_is_refused(tmp_path):
    metrics = {"qa": task_metrics(_task(tmp_path))}
    manifest = Manifest.model_validate({"criteria": [
        {"task": "qa", "metric": "itl_ms_p99", "candidate": "ft", "at_most": 100}]})
    with pytest.raises(ConfigError, match=r"criteria\.0\.metric: itl_ms_p99 pools every gap"):
        check_against(manifest, "m.yaml", {"qa": ["ft"]}, metrics, {"qa": 5000})


def test_holm_asks_for_resamples_and_examples_that_can_reach_its_levels(tmp_path):
    metrics = {t: task_metrics(_task(tmp_path, t)) for t in ("a", "b", "c")}
    runs = {t: ["ft", "base"] for t in metrics}
    criteria = [{"task": "*", "metric": "exact_match", "candidate": "ft", "better_than": "base"}] * 4
    manifest = Manifest.model_validate({"holm": True, "criteria": criteria})
    # 12 verdicts: the first needs p < 0.025 / 12, below a 1,000-resample bootstrap's smallest, 1/1001.
    with pytest.raises(ConfigError, match=r"holm: 12 verdicts .* bootstrap.resamples to at least 480"):
        check_against(manifest, "m.yaml", runs, metrics, {t: 100 for t in metrics}, resamples=300)
    check_against(manifest, "m.yaml", runs, metrics, {t: 100 for t in metrics}, resamples=1000)
    tail = Manifest.model_validate({"holm": True, "criteria": [
        {"task": "*", "metric": "e2e_ms_p95", "candidate": "ft", "at_most": 1000}]})
    one = {"a": runs["a"]}
    check_against(tail, "m.yaml", one, metrics, {"a": 80}, resamples=1000)  # one verdict: 72 requests suffice
    with pytest.raises(ConfigError, match=r"e2e_ms_p95 needs at least 86 .*\(Holm\)"):
        check_against(tail.model_copy(update={"criteria": tail.criteria * 2}), "m.yaml", one, metrics, {"a": 80},
                      resamples=1000)


@pytest.mark.parametrize(("rule", "field"), [
    ({"metric": "hallucination_rate", "at_most": 1.5}, "at_most"),
    ({"metric": "hallucination_rate", "at_most": 1}, "at_most"),
    ({"metric": "exact_match", "at_least": 0}, "at_least"), ({"metric": "rouge_l", "at_least": -0.2}, "at_least"),
    ({"metric": "exact_match", "not_worse_than": "base", "margin": 1}, "margin")])
def test_a_criterion_no_value_can_fail_is_refused(rule, field):
    """Evidence of nothing: a gate that passes whatever the model does (a ceiling at or over the metric's top)."""
    metrics = {"qa": TaskMetrics(("exact_match", "rouge_l", "hallucination_rate"))}
    manifest = Manifest.model_validate({"criteria": [{"task": "qa", "candidate": "ft", **rule}]})
    with pytest.raises(ConfigError, match=rf"m\.yaml: criteria\.0\.{field}: .*can never fail"):
        check_against(manifest, "m.yaml", {"qa": ["ft", "base"]}, metrics)
    # Just inside the range the criterion can go either way.
    inside = {**rule, field: {"at_most": 0.99, "at_least": 0.01, "margin": 0.99}[field]}
    check_against(Manifest.model_validate({"criteria": [{"task": "qa", "candidate": "ft", **inside}]}), "m.yaml",
                  {"qa": ["ft", "base"]}, metrics)
