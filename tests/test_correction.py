"""Machine-scored metrics corrected by reviewers' labels, on evidence with a known truth: a detector that misses
hallucinations reads low, the corrected rate recovers the truth; only the labelled prefix of the seeded order
counts; "cannot tell" and missing verdicts count against the candidate; a criterion on the corrected metric is
insufficient without labels (saying how to get them), decided once labelled; paired differences; the report."""

from dataclasses import replace

import numpy as np
import pytest

from harness.backends.base import Completion
from harness.config import load_task
from harness.correction import Corrections
from harness.data import Example
from harness.errors import ConfigError
from harness.labels import Label, label_order
from harness.manifest import resolve
from harness.manifest_check import check_against
from harness.manifest_spec import Manifest
from harness.metrics.defined import task_metrics
from harness.ratings import answer_sha256
from harness.records import Finding
from harness.report import correction_markdown
from harness.scoring import TaskEvidence
from tests.conftest import write_yaml

N, SEED = 400, 7


def _evidence(tmp_path, truth: dict[str, np.ndarray], flagged: dict[str, np.ndarray],
              failed: dict[str, set[int]] | None = None) -> dict[str, TaskEvidence]:
    """One grounded task; `truth`: which answers really are hallucinated; `flagged`: what the detector says."""
    task = load_task(str(write_yaml(tmp_path / "g" / "task.yaml", {
        "name": "g", "kind": "grounded_qa", "source": "passage",
        "data": {"test": "x.jsonl", "inputs": {"passage": "p", "q": "q"}, "reference": "r"},
        "prompt": {"template": "{passage} {q}"}, "metrics": ["hallucination_rate"]})))
    examples = [Example(f"e{i}", {"passage": "Paris.", "q": "city?"}, "Paris") for i in range(N)]
    failed = failed or {}
    comps = {cand: [Completion(ex.id, cand, "g", f"{cand} answer {i} {'Berlin' if t else 'Paris'}",
                               completion_tokens=1, ttft_s=0.01, e2e_s=0.02) if i not in failed.get(cand, set())
                    else Completion(ex.id, cand, "g", "", error="HTTP 503")
                    for i, (ex, t) in enumerate(zip(examples, truth[cand], strict=True))] for cand in truth}
    findings = {cand: [Finding(hallucinated=bool(f)) for f in flagged[cand]] for cand in truth}
    return {"g": TaskEvidence(task, examples, None, comps, resamples=500, seed=0, findings=findings,
                              metrics=task_metrics(task))}


def _labels(ev: dict[str, TaskEvidence], truth: dict[str, np.ndarray], count: int) -> list[Label]:
    """Reviewers label the first `count` examples of the seeded order, every candidate's answer, truthfully."""
    task = ev["g"]
    order = label_order(SEED, "hallucination_rate", "g", (ex.id for ex in task.examples))[:count]
    index = {ex.id: i for i, ex in enumerate(task.examples)}
    return [Label("run", "hallucination_rate", "g", ex, cand, "ada", float(truth[cand][index[ex]]),
                  answer_sha256(task.completions[cand][index[ex]].text)) for ex in order for cand in truth]


def _world(rng, rate: float, sensitivity: float, specificity: float) -> tuple[np.ndarray, np.ndarray]:
    truth = (rng.random(N) < rate).astype(float)
    flagged = np.where(truth == 1, rng.random(N) < sensitivity, rng.random(N) > specificity).astype(float)
    return truth, flagged


def test_the_corrected_rate_recovers_what_a_blind_detector_misses(tmp_path):
    rng = np.random.default_rng(0)
    truth, flagged = _world(rng, 0.30, sensitivity=0.5, specificity=0.95)  # the detector sees half the lies
    ev = _evidence(tmp_path, {"ft": truth}, {"ft": flagged})
    corrections = Corrections.of(ev, _labels(ev, {"ft": truth}, 150), SEED)
    est = corrections.estimate("g", "hallucination_rate", "ft", 0.95)
    raw = flagged.mean()
    assert est.n_labels == 150 and est.n_total == N
    assert est.raw[0] == pytest.approx(raw) and raw < truth.mean() - 0.1, "the data must bias the machine"
    assert est.low <= truth.mean() <= est.high and not est.raw[1] <= truth.mean() <= est.raw[2]
    found, results, _ = corrections.results(0.95)
    (row,) = [r for r in results if r.metric == "hallucination_rate_corrected"]
    assert (row.value, row.ci_low, row.ci_high) == (est.estimate, est.low, est.high)
    (c,) = found
    labelled = np.isin([ex.id for ex in ev["g"].examples],
                       label_order(SEED, "hallucination_rate", "g", (ex.id for ex in ev["g"].examples))[:150])
    assert c.labels == 150 and c.sensitivity is not None
    assert c.sensitivity[0] == pytest.approx(flagged[labelled & (truth == 1)].mean())
    assert c.specificity[0] == pytest.approx(1 - flagged[labelled & (truth == 0)].mean())
    table = "\n".join(correction_markdown(found))
    assert "150 of 400" in table and "PPI++" in table


def test_only_the_labelled_prefix_of_the_seeded_order_counts(tmp_path):
    rng = np.random.default_rng(1)
    truth, flagged = _world(rng, 0.2, 0.8, 0.9)
    ev = _evidence(tmp_path, {"ft": truth}, {"ft": flagged})
    labels = _labels(ev, {"ft": truth}, 60)
    gap = labels[9]  # the tenth example of the order left unlabelled: only the nine before it are a random sample
    corrections = Corrections.of(ev, [lab for lab in labels if lab != gap], SEED)
    assert corrections.estimate("g", "hallucination_rate", "ft", 0.95).n_labels == 9
    # A label of an answer since rewritten counts for nothing.
    stale = [replace(lab, answer_sha256=answer_sha256("an older answer")) if lab == labels[0] else lab
             for lab in labels]
    assert Corrections.of(ev, stale, SEED).estimate("g", "hallucination_rate", "ft", 0.95).n_labels == 0


def test_cannot_tell_and_missing_verdicts_count_against_the_candidate(tmp_path):
    truth, flagged = np.zeros(N), np.zeros(N)
    ev = _evidence(tmp_path, {"ft": truth}, {"ft": flagged}, failed={"ft": set(range(40))})
    unsure = Corrections.of(ev, [replace(lab, value=None) for lab in _labels(ev, {"ft": truth}, 100)], SEED)
    est = unsure.estimate("g", "hallucination_rate", "ft", 0.95)
    assert est.estimate == pytest.approx(1.0), "answers nobody could judge are hallucinated, as far as the gate knows"
    assert est.raw[0] == pytest.approx(40 / N), "failed requests are at the machine's worst"
    assert unsure.cannot_tell("g", "hallucination_rate", "ft") == 100


def _manifest(**criterion) -> Manifest:
    return Manifest(criteria=[{"task": "g", "metric": "hallucination_rate_corrected", "candidate": "ft",
                               **criterion}], confidence=0.95, min_examples=1)


def test_a_criterion_on_the_corrected_rate(tmp_path):
    rng = np.random.default_rng(2)
    truth, flagged = _world(rng, 0.40, sensitivity=0.5, specificity=0.95)
    ev = _evidence(tmp_path, {"ft": truth}, {"ft": flagged})
    check_against(_manifest(at_most=0.30), "m.yaml", {"g": ["ft"]}, {"g": ev["g"].metrics}, {"g": N})
    (none,) = resolve(_manifest(at_most=0.30), ev, None, Corrections.of(ev, [], SEED))
    assert none.status == "insufficient" and "0 labels" in none.evidence and "Review page" in none.evidence
    (raw,) = resolve(Manifest(criteria=[{"task": "g", "metric": "hallucination_rate", "candidate": "ft",
                                         "at_most": 0.30}], min_examples=1), ev)
    assert raw.status == "pass", f"{raw.evidence}: the data must let the biased machine pass a 40% liar"
    (fixed,) = resolve(_manifest(at_most=0.30), ev, None, Corrections.of(ev, _labels(ev, {"ft": truth}, 200), SEED))
    assert fixed.status == "fail" and fixed.n == 200 and "PPI++" in fixed.evidence
    near = float(truth.mean()) + 0.03
    (close,) = resolve(_manifest(at_most=near), ev, None, Corrections.of(ev, _labels(ev, {"ft": truth}, 30), SEED))
    assert close.status == "insufficient" and "more labels would settle it" in close.evidence, close.evidence


def test_a_corrected_paired_difference_on_the_examples_labelled_for_both(tmp_path):
    rng = np.random.default_rng(3)
    base_truth, base_flag = _world(rng, 0.40, 0.6, 0.9)
    ft_truth = np.where(rng.random(N) < 0.6, 0.0, base_truth)  # the fine-tune fixes most of the base's lies
    ft_flag = np.where(ft_truth == 1, rng.random(N) < 0.6, rng.random(N) > 0.9).astype(float)
    truth = {"base": base_truth, "ft": ft_truth}
    ev = _evidence(tmp_path, truth, {"base": base_flag, "ft": ft_flag})
    labels = _labels(ev, truth, 200)
    corrections = Corrections.of(ev, labels, SEED)
    diff = corrections.difference("g", "hallucination_rate", "ft", "base", 0.95)
    assert diff.n_labels == 200 and diff.low <= ft_truth.mean() - base_truth.mean() <= diff.high
    one_sided = Corrections.of(ev, [lab for lab in labels if lab.candidate == "ft" or lab.example_id != labels[0]
                                    .example_id], SEED)
    assert one_sided.difference("g", "hallucination_rate", "ft", "base", 0.95).n_labels == 0, \
        "the first example lacks the base's label: no example is labelled for both in the order's prefix"
    manifest = _manifest(better_than="base", by=0.05)
    (better,) = resolve(manifest, ev, None, corrections)
    assert better.status == "pass" and better.baseline == "base"


def test_a_corrected_metric_of_a_task_that_does_not_score_its_machine_is_refused(tmp_path):
    bare = task_metrics(load_task(str(write_yaml(tmp_path / "h" / "task.yaml", {
        "name": "g", "kind": "grounded_qa", "source": "passage",
        "data": {"test": "x.jsonl", "inputs": {"passage": "p", "q": "q"}, "reference": "r"},
        "prompt": {"template": "{passage} {q}"}, "metrics": ["exact_match"]}))))
    with pytest.raises(ConfigError, match="corrects hallucination_rate, which task g does not score"):
        check_against(_manifest(at_most=0.2), "m.yaml", {"g": ["ft"]}, {"g": bare}, {"g": N})


def test_a_failed_request_counts_at_the_worst_whatever_its_empty_answer_was_labelled(tmp_path):
    rng = np.random.default_rng(5)
    truth, flagged = _world(rng, 0.2, 0.9, 0.9)
    failed = set(range(0, N, 4))  # a quarter of the requests failed; a reviewer said their empty answer is fine
    ev = _evidence(tmp_path, {"ft": truth}, {"ft": flagged}, failed={"ft": failed})
    labels = [replace(lab, value=0.0) if int(lab.example_id[1:]) in failed else lab
              for lab in _labels(ev, {"ft": truth}, 200)]
    manifest = Manifest(criteria=[{"task": "g", "metric": "hallucination_rate_corrected", "candidate": "ft",
                                   "at_most": 0.3}], min_examples=1, max_error_rate=0.3)
    (v,) = resolve(manifest, ev, None, Corrections.of(ev, labels, SEED))
    assert v.status == "fail" and v.ci_low > 0.3, v.evidence  # 0.25 failed + 0.75 × 0.2 hallucinated = 0.4


def test_what_nobody_knows_sits_where_the_criterion_does_not_want_it(tmp_path):
    """All labels "cannot tell": at_most finds them hallucinated, and at_least finds them faithful."""
    truth = np.zeros(N)
    ev = _evidence(tmp_path, {"ft": truth}, {"ft": truth})
    unsure = [replace(lab, value=None) for lab in _labels(ev, {"ft": truth}, 100)]
    corrections = Corrections.of(ev, unsure, SEED)
    (low,) = resolve(_manifest(at_most=0.5), ev, None, corrections)
    (high,) = resolve(_manifest(at_least=0.5), ev, None, corrections)
    assert low.status == "fail" and high.status == "fail", (low.evidence, high.evidence)


def test_a_baselines_unknowns_count_at_its_best(tmp_path):
    """The fine-tune is labelled faithful throughout; nobody can tell about the base's answers. Counted at the base's
    worst they would hand the fine-tune a lead; at its best they leave none."""
    zeros = np.zeros(N)
    ev = _evidence(tmp_path, {"base": zeros, "ft": zeros}, {"base": np.ones(N), "ft": zeros})
    labels = [replace(lab, value=None) if lab.candidate == "base" else lab
              for lab in _labels(ev, {"base": zeros, "ft": zeros}, 200)]
    (v,) = resolve(_manifest(better_than="base", by=0.05), ev, None, Corrections.of(ev, labels, SEED))
    assert v.status == "fail" and v.observed == pytest.approx(0.0)


def test_min_examples_counts_labels_and_the_p_value_serves_holm(tmp_path):
    truth = np.zeros(N)
    ev = _evidence(tmp_path, {"ft": truth}, {"ft": truth})
    few = Corrections.of(ev, _labels(ev, {"ft": truth}, 60), SEED)
    manifest = Manifest(criteria=[{"task": "g", "metric": "hallucination_rate_corrected", "candidate": "ft",
                                   "at_most": 0.3}], min_examples=100)
    (v,) = resolve(manifest, ev, None, few)
    assert v.status == "insufficient" and "only 60 labels (min_examples 100)" in v.evidence
    (clear,) = resolve(_manifest(at_most=0.3), ev, None, few)
    (near,) = resolve(_manifest(at_most=0.07), ev, None, few)
    assert clear.status == "pass" and 0 < clear.p_value < near.p_value <= 1
