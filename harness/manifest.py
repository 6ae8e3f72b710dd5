"""The success manifest: criteria written before training, resolved against a run into verdicts.

A criterion passes when its whole confidence interval lies strictly on the right side of its threshold,
fails when the whole interval lies strictly on the wrong side, and is `insufficient` otherwise (`stats.decide`,
the monitor's rule too), or when fewer than `min_examples` examples have a value. `better_than … by` and
`not_worse_than … margin` use the paired interval of the difference on the same examples. "Better" follows the
metric's direction: lower is better for latency, error and hallucination rates.

Nothing missing counts in the candidate's favour: a candidate with more failed requests than `max_error_rate`
allows, or a judged metric with more missing verdicts than `max_unparsed`, is insufficient; failures within the
allowance count at each metric's worst (`TaskEvidence.counting_against`). Before any work, `manifest_check`
refuses a criterion the data can never decide (fewer test examples than `min_examples`, too few requests for a
tail percentile to have a bound).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from harness.correction import Corrections
from harness.manifest_check import is_corrected, is_rated, min_n_for
from harness.manifest_spec import Criterion, Manifest
from harness.metrics.corrected import CorrectedMetric
from harness.metrics.human import RatingMetric
from harness.ppi import PPIEstimate, labels_needed
from harness.ratings import HumanRatings
from harness.records import STATUSES, Status, Verdict
from harness.scoring import TaskEvidence
from harness.slice_verdicts import resolve_sliced
from harness.slicing import Partition
from harness.stats import (
    Direction,
    Interval,
    bounded_mean_interval,
    decide,
    examples_needed,
    holm,
    p_value_by_confidence,
)


def short(value: float | None) -> str:
    """A number for people: integers for large values (latency in ms), four significant digits else."""
    if value is None or math.isnan(value):
        return "–"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def _one_sided_p(draws: np.ndarray, threshold: float, above: bool) -> float:
    """Bootstrap p-value of "the criterion does not hold": the share of draws on the wrong side."""
    d = draws[~np.isnan(draws)]
    if len(d) == 0:
        return math.nan
    wrong = (d <= threshold).sum() if above else (d >= threshold).sum()
    return float((wrong + 1) / (len(d) + 1))


def _human_values(c: Criterion, task: str, human: HumanRatings | None, ev: TaskEvidence) -> np.ndarray | None:
    """Per rated example: the rating metric's value (mean 1–5 rating, win share in blind comparisons, or a
    judge's agreement with the reviewers, which reads the judge's per-example scores). With `against`, only the
    comparisons between the candidate and that opponent count."""
    if human is None:
        return None
    metric, candidate = c.metric, c.candidate
    if c.against is not None:
        pair = {candidate, c.against}
        human = replace(human, preferences=[p for p in human.preferences if {p.candidate_a, p.candidate_b} == pair])
    rater = ev.metrics[metric]
    assert isinstance(rater, RatingMetric)
    judged = None
    if rater.reads is not None:
        per = ev.metrics[rater.reads].per_example(ev.stats(rater.reads)[candidate])
        judged = {ex.id: float(v) for ex, v in zip(ev.examples, per, strict=True)
                  if not np.isnan(v)} if per is not None else {}
    return rater.rated_values(human, task, candidate, judged)


def _absolute(c: Criterion) -> tuple[bool, float]:
    """(whether the value must lie above, the threshold) of an at_least or at_most criterion."""
    if c.at_least is not None:
        return True, c.at_least
    assert c.at_most is not None
    return False, c.at_most


def _listed(ids: list[str], most: int = 5) -> str:
    return ", ".join(ids[:most]) + (f" and {len(ids) - most} more" if len(ids) > most else "")


def _others(c: Criterion, ev: TaskEvidence) -> list[str]:
    """The other candidates whose answers decide the criterion: its baseline, a pairwise judge's rival, and for a
    blind comparison every candidate of the task (`*`)."""
    rivals = (c.against,) if c.against is not None else ev.metrics[c.metric].rivals
    named = [c.baseline] if c.baseline is not None else []
    named += [r for r in ev.candidates if r != c.candidate] if "*" in rivals else list(rivals)
    return [name for name in dict.fromkeys(named) if name in ev.completions]


def _blocked(c: Criterion, task: str, ev: TaskEvidence, manifest: Manifest) -> str | None:
    """Why the evidence cannot decide the criterion whatever its interval says. The candidate's failed requests
    beyond `max_error_rate`; any failed request of a baseline or rival (what it would have answered is unknown, and
    a failure there would count for the candidate); too many missing machine verdicts behind the metric."""
    failed = ev.failed(c.candidate)
    # Reviewers rate answers that exist: a failure cannot be rated at its worst, so ratings allow none.
    rated = is_rated(c.metric, ev.metrics)
    allowed = 0.0 if rated else manifest.max_error_rate
    if len(failed) > allowed * ev.n:
        return (f"{len(failed)} of {ev.n} requests of {c.candidate} on {task} failed ({_listed(failed)}), above "
                f"max_error_rate {allowed:g}{' for ratings' if rated else ''}; `harness run --resume` "
                "retries them")
    for other in _others(c, ev):
        if failed := ev.failed(other):
            return (f"{len(failed)} of {ev.n} requests of {other} on {task} failed ({_listed(failed)}): what it would "
                    f"have answered is unknown, so {c.candidate} cannot be compared with it; `harness run --resume` "
                    "retries them")
    if ev.metrics[c.metric].timed:
        for name in [c.candidate, *_others(c, ev)]:
            if reused := ev.reused(name):
                return (f"{len(reused)} of {ev.n} answers of {name} on {task} came from the generation cache, so this "
                        f"run did not time them; `harness run --no-cache` measures {c.metric}")
    unparsed = ev.metrics[c.metric].unparsed
    if unparsed is not None:
        for name in [c.candidate, *_others(c, ev)]:
            share = ev.metrics[unparsed].value(ev.stats(unparsed)[name], ev.n)
            if share > manifest.max_unparsed:
                return (f"{share:.0%} of the verdicts behind {c.metric} of {name} on {task} are missing (unparsed "
                        f"replies or failed calls), above max_unparsed {manifest.max_unparsed:.0%}")
    return None


def _insufficient(c: Criterion, task: str, label: str, n: int, why: str) -> Verdict:
    return Verdict(label, task, c.metric, c.candidate, c.baseline, threshold=math.nan, observed=None, ci_low=None,
                   ci_high=None, n=n, status="insufficient", evidence=why)


def _inverted_p(bounds: Callable[[float], tuple[float, float]], threshold: float, above: bool) -> float:
    """One-sided p-value of a criterion decided on intervals the metric computes itself (order statistics)."""
    direction: Direction = "at_least" if above else "at_most"
    return p_value_by_confidence(lambda conf: decide(*bounds(conf), threshold, direction) == "holds")


def _decided(what: str, low: float, high: float, threshold: float, above: bool, conf: float) -> tuple[Status, str]:
    decision = decide(low, high, threshold, "at_least" if above else "at_most")
    if decision == "holds":
        return "pass", f"{what}: the whole {conf:.0%} interval is {'above' if above else 'below'} {short(threshold)}"
    if decision == "broken":
        return "fail", f"{what}: the whole {conf:.0%} interval is {'below' if above else 'above'} {short(threshold)}"
    if math.isinf(high if not above else low):
        return "insufficient", f"{what}: too few values for a {conf:.0%} bound on that side"
    return "insufficient", f"{what}: the {conf:.0%} interval reaches {short(threshold)}"


def _left_out(human: HumanRatings | None) -> str:
    """What a rated verdict says of reviewers whose ratings the review plan left out."""
    if human is None or not human.left_out:
        return ""
    return "; left out: " + "; ".join(f"{name}'s ratings ({why})" for name, why in sorted(human.left_out.items()))


def _resolve_rated(c: Criterion, task: str, label: str, ev: TaskEvidence, manifest: Manifest,
                   human: HumanRatings | None) -> Verdict:
    conf = manifest.confidence
    blocked = _blocked(c, task, ev, manifest)
    if blocked is not None:
        return _insufficient(c, task, label, ev.n, blocked)
    values = _human_values(c, task, human, ev)
    if values is None or len(values) == 0:
        return _insufficient(c, task, label, 0, f"no human ratings ({c.metric}) of {c.candidate} on {task} yet"
                             + _left_out(human))
    n = len(values)
    value = float(values.mean())
    # Few rated examples, coarse scores: an interval that holds at small n (a bootstrap of one rating is a point).
    scale = ev.metrics[c.metric].value_range
    low, high = bounded_mean_interval(values, *scale, conf)
    above, threshold = _absolute(c)
    p = _inverted_p(lambda k: bounded_mean_interval(values, *scale, k), threshold, above)
    what = f"{short(value)} [{short(low)}, {short(high)}] over {n} rated examples"
    what += _left_out(human)
    return _verdict(c, task, label, manifest, value, low, high, threshold, above, n, 1, p, what)


def _verdict(c: Criterion, task: str, label: str, manifest: Manifest, value: float, low: float, high: float,
             threshold: float, above: bool, n: int, min_n: int, p: float, what: str) -> Verdict:
    conf = manifest.confidence
    status: Status
    if math.isnan(value) or math.isnan(low):
        status, why = "insufficient", f"{c.metric} has no value for {c.candidate} on {task}"
    else:
        status, why = _decided(what, low, high, threshold, above, conf)
    needed = None
    if status == "pass" and n < manifest.min_examples:
        status = "insufficient"
        why = f"{why}, but only {n} examples with a value (min_examples {manifest.min_examples})"
        needed = manifest.min_examples
    elif status == "insufficient" and not math.isnan(value):
        needed = (examples_needed(n, low, high, value, threshold) if math.isfinite(low) and math.isfinite(high)
                  else max(min_n, n + 1))
        if needed is not None:
            needed = max(needed, manifest.min_examples, n + 1)
            why += f"; about {needed} examples would settle it"
    return Verdict(label, task, c.metric, c.candidate, c.baseline, threshold=threshold, observed=value, ci_low=low,
                   ci_high=high, n=n, status=status, evidence=why, p_value=p, examples_needed=needed,
                   confidence=conf)


def _resolve_corrected(c: Criterion, task: str, label: str, ev: TaskEvidence, manifest: Manifest,
                       corrections: Corrections | None) -> Verdict:
    """A criterion on `<metric>_corrected`: the PPI++ interval of the machine's values corrected by the labels
    (of the candidate, or of both candidates on the examples labelled for both), insufficient below two labels."""
    corrected = ev.metrics[c.metric]
    assert isinstance(corrected, CorrectedMetric)
    base = c.model_copy(update={"metric": corrected.reads})
    blocked = _blocked(base, task, ev, manifest)
    if blocked is not None:
        return _insufficient(c, task, label, ev.n, blocked)
    conf = manifest.confidence
    sign = 1.0 if corrected.higher_is_better else -1.0
    baseline = c.baseline

    low_end, high_end = corrected.value_range
    unknown = low_end if c.at_least is not None else high_end  # what nobody knows, where the criterion wants it not

    def estimate(k: float) -> PPIEstimate:
        assert corrections is not None
        if baseline is None:
            return corrections.estimate(task, corrected.reads, c.candidate, k, unknown)
        return corrections.difference(task, corrected.reads, c.candidate, baseline, k)

    def bounds(k: float) -> tuple[float, float]:
        found = estimate(k)
        if baseline is None:
            return found.low, found.high
        low, high = sorted((sign * found.low, sign * found.high))
        return low, high

    found = estimate(conf) if corrections is not None else None
    whose = c.candidate if baseline is None else f"{c.candidate} and {baseline}"
    if found is None or found.n_labels < 2:
        return _insufficient(c, task, label, ev.n, f"{0 if found is None else found.n_labels} labels of {whose}'s "
                             f"answers on {task} for {corrected.reads}: label them on the Review page")
    # Against a baseline: the improvement in the metric's good direction, as for every paired criterion.
    above, threshold = _absolute(c) if baseline is None else (True, (c.by or 0.0) if c.better_than
                                                              else -(c.margin or 0.0))
    value = found.estimate if baseline is None else sign * found.estimate
    low, high = bounds(conf)
    what = (f"{short(value)} [{short(low)}, {short(high)}] from {found.n_labels} labels and {found.n_total} answers "
            f"(PPI++, {found.method})")
    status, why = _decided(what, low, high, threshold, above, conf)
    if status == "insufficient":
        more = labels_needed(found, threshold if baseline is None else sign * threshold)
        if more:
            why += f"; about {more} more labels would settle it"
    if status == "pass" and found.n_labels < manifest.min_examples:
        status, why = "insufficient", f"{why}, but only {found.n_labels} labels (min_examples {manifest.min_examples})"
    return Verdict(label, task, c.metric, c.candidate, baseline, threshold=threshold, observed=value, ci_low=low,
                   ci_high=high, n=found.n_labels, status=status, evidence=why,
                   p_value=_inverted_p(bounds, threshold, above), confidence=conf)


def _resolve_one(c: Criterion, task: str, ev: TaskEvidence, manifest: Manifest, human: HumanRatings | None = None,
                 corrections: Corrections | None = None, partitions: list[Partition] | None = None) -> Verdict:
    label = c.describe() if c.task != "*" else c.describe().replace("* ", f"{task} ", 1)
    if is_corrected(c.metric, ev.metrics):
        return _resolve_corrected(c, task, label, ev, manifest, corrections)
    if is_rated(c.metric, ev.metrics):
        return _resolve_rated(c, task, label, ev, manifest, human)
    conf = manifest.confidence
    blocked = _blocked(c, task, ev, manifest)
    if blocked is not None:
        return _insufficient(c, task, label, ev.n, blocked)
    if c.slice is not None:
        return _resolve_on_slices(c, task, label, ev, manifest, partitions or [])
    metric = ev.metrics[c.metric]
    needs_high = c.at_least is not None if c.baseline is None else metric.higher_is_better
    ev = ev.counting_against(c.candidate, c.baseline, needs_high)
    own = (metric.interval(ev.stats(c.metric)[c.candidate], conf) is not None if c.baseline is None
           else metric.compared_by_intervals)
    n = ev.count(c.metric, c.candidate)
    if c.baseline is None:
        iv = ev.interval(c.metric, c.candidate, conf)
        value, low, high = iv.value, iv.low, iv.high
        above, threshold = _absolute(c)
        if own:
            p = _inverted_p(lambda k: _bounds(ev.interval(c.metric, c.candidate, k)), threshold, above)
        else:
            p = _one_sided_p(ev.draws(c.metric)[c.candidate], threshold, above)
        what = f"{short(value)} [{short(low)}, {short(high)}]"
    else:
        n = min(n, ev.count(c.metric, c.baseline))
        # Improvement over the baseline, in the metric's good direction.
        sign = 1.0 if metric.higher_is_better else -1.0
        baseline = c.baseline

        def improvement(k: float) -> tuple[float, float]:
            diff = ev.paired(c.metric, c.candidate, baseline, k)
            low, high = sorted((sign * diff.low, sign * diff.high))
            return low, high

        value = sign * ev.paired(c.metric, c.candidate, baseline, conf).delta
        low, high = improvement(conf)
        above = True
        threshold = (c.by or 0.0) if c.better_than else -(c.margin or 0.0)
        if own:
            p = _inverted_p(improvement, threshold, above=True)
        else:
            d = ev.draws(c.metric)
            p = _one_sided_p(sign * (d[c.candidate] - d[baseline]), threshold, above=True)
        what = f"improvement over {baseline} {short(value)} [{short(low)}, {short(high)}]"
    missing = int(ev.missing(c.metric, c.candidate).sum())
    if c.metric in ev.no_worst:
        return _insufficient(c, task, label, n, f"{missing} of {c.candidate}'s answers on {task} failed or have no "
                             f"verdict, and {c.metric} cannot count them at their worst")
    if missing:
        what += f" (with {missing} failed requests or missing verdicts of {c.candidate} counted at their worst)"
    return _verdict(c, task, label, manifest, value, low, high, threshold, above, n, min_n_for(metric, c, conf), p,
                    what)


def _resolve_on_slices(c: Criterion, task: str, label: str, ev: TaskEvidence, manifest: Manifest,
                       partitions: list[Partition]) -> Verdict:
    partition = next((p for p in partitions if p.slicing == c.slice), None)
    if partition is None:
        return _insufficient(c, task, label, ev.n, f"{task} has no slicing {c.slice!r} in this run")
    missing = int(ev.missing(c.metric, c.candidate).sum())
    if c.max_gap is not None and missing:
        # A failure at its worst may widen or narrow a gap: no side of it is safe to assume.
        return _insufficient(c, task, label, ev.n, f"{missing} of {c.candidate}'s answers on {task} failed or have "
                             "no verdict, and a gap between slices cannot count them at their worst")
    ev = ev.counting_against(c.candidate, None, c.at_least is not None)
    ev.stats(c.metric)  # finds whether the metric can count failures at their worst (`no_worst`)
    if c.metric in ev.no_worst:
        return _insufficient(c, task, label, ev.n, f"{missing} of {c.candidate}'s answers on {task} failed or have "
                             f"no verdict, and {c.metric} cannot count them at their worst")
    return resolve_sliced(c, task, label, ev, partition, manifest)


def _bounds(iv: Interval) -> tuple[float, float]:
    return iv.low, iv.high


def _tasks_with(c: Criterion, evidence: dict[str, TaskEvidence]) -> list[str]:
    """The tasks a `*` criterion expands to: those on which all its candidates are scored."""
    names = [n for n in (c.candidate, c.baseline) if n is not None]
    return [t for t, ev in evidence.items() if all(n in ev.completions for n in names)]


def resolve(manifest: Manifest, evidence: dict[str, TaskEvidence], human: HumanRatings | None = None,
            corrections: Corrections | None = None,
            partitions: dict[str, list[Partition]] | None = None) -> list[Verdict]:
    """One verdict per criterion and task (`*` expands to every task); `partitions`: each task's slicings."""
    verdicts = [
        _resolve_one(c, task, evidence[task], manifest, human, corrections, (partitions or {}).get(task))
        for c in manifest.criteria
        for task in (_tasks_with(c, evidence) if c.task == "*" else [c.task])
    ]
    if not manifest.holm:
        return verdicts
    # Holm's correction over the family of claims: a pass must also survive the adjusted p-value.
    alpha = (1 - manifest.confidence) / 2
    ps = [v.p_value if v.p_value is not None and not math.isnan(v.p_value) else 1.0 for v in verdicts]
    out = []
    for v, adjusted in zip(verdicts, holm(ps), strict=True):
        if v.status == "pass" and adjusted >= alpha:
            v = replace(v, status="insufficient",
                        evidence=f"{v.evidence}; not significant after Holm correction (p={adjusted:.3g})")
        out.append(replace(v, p_value=adjusted))
    return out


def passed(verdicts: list[Verdict]) -> bool:
    """Every criterion passes; no verdict at all is no evidence, not a pass."""
    return bool(verdicts) and all(v.status == "pass" for v in verdicts)


def failed_requests(evidence: dict[str, TaskEvidence]) -> dict[str, dict[str, list[str]]]:
    """candidate -> task -> the examples whose request failed (none listed where none failed)."""
    out: dict[str, dict[str, list[str]]] = {}
    for task, ev in evidence.items():
        for cand in ev.candidates:
            if failed := ev.failed(cand):
                out.setdefault(cand, {})[task] = failed
    return out


def verdict_record(manifest: Manifest, verdicts: list[Verdict],
                   failed: dict[str, dict[str, list[str]]] | None = None) -> dict[str, Any]:
    counts = {s: sum(v.status == s for v in verdicts) for s in STATUSES}
    return {"passed": passed(verdicts), "confidence": manifest.confidence, "min_examples": manifest.min_examples,
            "max_error_rate": manifest.max_error_rate, "max_unparsed": manifest.max_unparsed,
            "holm": manifest.holm, "counts": counts, "failed_requests": failed or {},
            "criteria": [v.to_dict() for v in verdicts], "manifest": manifest.model_dump(mode="json")}
