"""Criteria on slices, resolved with the gate's rules (`stats.decide`: pass, fail or insufficient).

`worst: true` with at_least / at_most: every slice of the slicing must meet the bar. It passes when each slice's
own interval lies on the right side: an intersection-union test (Berger 1982), whose false-pass rate stays within
that of one slice, because a false pass needs the slice truly below the bar to pass its own test; no correction is
needed, and none would make it sounder. It fails when one slice's interval, Bonferroni-corrected over the k slices
(at 1 - (1 - confidence) / k), lies wholly on the wrong side, so a false fail is as rare. `max_gap`: the simultaneous
interval of the best-worst gap (`slice_scoring.gap_interval`) must lie below the bar to pass, above it to fail.
A slice below its slicing's `min_size` makes the criterion insufficient (a failing slice still fails it).
"""

from __future__ import annotations

import math

from harness.manifest_spec import Criterion, Manifest
from harness.records import Status, Verdict
from harness.scoring import TaskEvidence
from harness.slice_scoring import gap_interval, subsets
from harness.slicing import Partition
from harness.stats import Direction, decide, p_value_by_confidence


def _num(value: float) -> str:
    return "–" if math.isnan(value) else "∞" if math.isinf(value) else f"{value:.4g}"


def resolve_sliced(c: Criterion, task: str, label: str, ev: TaskEvidence, partition: Partition,
                   manifest: Manifest) -> Verdict:
    """The verdict of a criterion with `slice:`; `ev` counts the candidate's failed requests at their worst."""
    subs = subsets(ev, partition)
    small = [name for name in partition.slices if partition.too_small(name)]
    sizes = [len(idx) for idx in partition.slices.values()]
    n = min(sizes) if sizes else 0
    conf = manifest.confidence
    if c.max_gap is not None:
        status, why, (value, low, high), p = _gap(c, subs, small, partition, conf)
        threshold = c.max_gap
    else:
        status, why, (value, low, high), p = _worst(c, subs, small, partition, conf)
        threshold = c.at_least if c.at_least is not None else c.at_most  # type: ignore[assignment]
    if status == "pass" and n < manifest.min_examples:
        status, why = "insufficient", f"{why}, but the smallest slice has {n} examples (min_examples " \
                                      f"{manifest.min_examples})"
    return Verdict(label, task, c.metric, c.candidate, None, threshold=threshold, observed=value, ci_low=low,
                   ci_high=high, n=n, status=status, evidence=why, p_value=p, confidence=conf)


def _too_small(small: list[str], partition: Partition) -> str:
    return (f"slices {', '.join(small)} of {partition.slicing} have fewer than {partition.min_size} examples "
            "(its min_size)")


def _worst(c: Criterion, subs: dict[str, TaskEvidence], small: list[str], partition: Partition,
           conf: float) -> tuple[Status, str, tuple[float, float, float], float]:
    above = c.at_least is not None
    threshold = c.at_least if above else c.at_most
    assert threshold is not None
    direction: Direction = "at_least" if above else "at_most"
    k = max(len(subs), 1)

    def decisions(level: float) -> dict[str, str]:
        return {name: decide(*_bounds(sub, c, level), threshold, direction) for name, sub in subs.items()}

    corrected = decisions(1 - (1 - conf) / k)
    own = decisions(conf)
    ivs = {name: sub.interval(c.metric, c.candidate, conf) for name, sub in subs.items()}
    # The slice nearest to failing: the lowest lower bound for at_least, the highest upper bound for at_most.
    worst = (min(ivs, key=lambda s: ivs[s].low) if above else max(ivs, key=lambda s: ivs[s].high)) if ivs else None
    shown = (ivs[worst].value, ivs[worst].low, ivs[worst].high) if worst else (math.nan, math.nan, math.nan)
    p = p_value_by_confidence(
        lambda level: not small and bool(subs) and all(d == "holds" for d in decisions(level).values()))
    what = f"worst slice {worst} {_num(shown[0])} [{_num(shown[1])}, {_num(shown[2])}]"
    broken = [name for name, d in corrected.items() if d == "broken"]
    if broken:
        return ("fail", f"{what}: slice {broken[0]}'s {1 - (1 - conf) / k:.4g} interval (Bonferroni over {k} "
                f"slices) is wholly {'below' if above else 'above'} {_num(threshold)}", shown, p)
    if small:
        return "insufficient", f"{what}; {_too_small(small, partition)}", shown, p
    if subs and all(d == "holds" for d in own.values()):
        return ("pass", f"{what}: every slice's {conf:.0%} interval is {'above' if above else 'below'} "
                f"{_num(threshold)}", shown, p)
    open_ = [name for name, d in own.items() if d != "holds"]
    return ("insufficient", f"{what}: the {conf:.0%} interval of slice {', '.join(open_[:3])} reaches "
            f"{_num(threshold)}", shown, p)


def _bounds(sub: TaskEvidence, c: Criterion, level: float) -> tuple[float, float]:
    iv = sub.interval(c.metric, c.candidate, level)
    return iv.low, iv.high


def _gap(c: Criterion, subs: dict[str, TaskEvidence], small: list[str], partition: Partition,
         conf: float) -> tuple[Status, str, tuple[float, float, float], float]:
    assert c.max_gap is not None
    bar = c.max_gap
    ranked = {name: sub for name, sub in subs.items() if name not in small}
    iv = gap_interval(ranked, c.metric, c.candidate, conf)
    shown = (iv.value, iv.low, iv.high)
    p = p_value_by_confidence(
        lambda level: not small and decide(*_gap_bounds(ranked, c, level), bar, "at_most") == "holds")
    what = f"gap between {partition.slicing} slices {_num(iv.value)} [{_num(iv.low)}, {_num(iv.high)}]"
    if small:
        return "insufficient", f"{what}; {_too_small(small, partition)}", shown, p
    decision = decide(iv.low, iv.high, bar, "at_most")
    if decision == "holds":
        return "pass", f"{what}: the whole {conf:.0%} interval is below {_num(bar)}", shown, p
    if decision == "broken":
        return "fail", f"{what}: the whole {conf:.0%} interval is above {_num(bar)}", shown, p
    return "insufficient", f"{what}: the {conf:.0%} interval reaches {_num(bar)}", shown, p


def _gap_bounds(subs: dict[str, TaskEvidence], c: Criterion, level: float) -> tuple[float, float]:
    iv = gap_interval(subs, c.metric, c.candidate, level)
    return iv.low, iv.high
