"""Slices at their edges, where a verdict could pass that should not: missing values, empty and single slices, term
lists, bucket edges, failed requests, and Simpson flags that need evidence, not a point estimate."""

import json

import numpy as np
import pytest

from harness.backends.base import Completion
from harness.config import TaskRef, load_task
from harness.data import load_task_data
from harness.errors import ConfigError
from harness.manifest import resolve
from harness.manifest_check import check_against
from harness.manifest_spec import Manifest
from harness.metrics.defined import task_metrics
from harness.report_slices import slices_markdown
from harness.scoring import TaskEvidence
from harness.slice_scoring import gap_interval, slice_report, subsets
from harness.slicing import declared, meta_columns, partitions
from tests.conftest import write_yaml


def _planned(tmp_path, rows, slices, **task):
    (tmp_path / "t").mkdir(exist_ok=True)
    (tmp_path / "t" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = load_task(str(write_yaml(tmp_path / "t" / "task.yaml", {
        "name": "t", "kind": "generation", "metrics": ["exact_match"], "prompt": {"template": "{q}"},
        "data": {"test": "test.jsonl", "inputs": {"q": "q"}, "reference": "r"}, "slices": slices, **task})))
    found = declared(spec, TaskRef(task="t"), tmp_path / "s.yaml", 0)
    data = load_task_data(spec, meta_columns=meta_columns(spec, found))
    return spec, data, partitions(found, data.test, data.labels)


def _evidence(spec, data, answers: dict[str, list[str]], errors: dict[str, set[int]] | None = None) -> TaskEvidence:
    errors = errors or {}
    completions = {cand: [Completion(ex.id, cand, "t", text, error="timeout" if i in errors.get(cand, ()) else None)
                          for i, (ex, text) in enumerate(zip(data.test, texts, strict=True))]
                   for cand, texts in answers.items()}
    return TaskEvidence(spec, data.test, data.labels, completions, resamples=1000, seed=0, metrics=task_metrics(spec))


def _criterion(**rule):
    return Manifest.model_validate({"criteria": [{"task": "t", "metric": "exact_match", "candidate": "ft",
                                                  "slice": "region", **rule}]})


def _sizes(partition):
    return {name: len(idx) for name, idx in partition.slices.items()}


# 40 examples in north, 40 in south, 15 with no region at all (absent key or null).
REGIONS = ["north"] * 40 + ["south"] * 40 + [None] * 15


def _region_rows():
    rows = []
    for i, region in enumerate(REGIONS):
        row = {"q": f"question {i}", "r": "yes"}
        if region is not None:
            row["region"] = region
        elif i % 2:
            row["region"] = None
        rows.append(row)
    return rows


def test_examples_missing_the_field_form_their_own_slice_for_every_derivation(tmp_path):
    _, _, parts = _planned(tmp_path, _region_rows(), [
        {"name": "region", "field": "region", "min_size": 10},
        {"name": "grouped", "field": "region", "groups": {"all": ["north", "south"]}},
        {"name": "long", "field": "region", "length_buckets": [1]},
        {"name": "has_n", "field": "region", "contains_any": ["north"]}])
    by = {p.slicing: _sizes(p) for p in parts}
    assert by["region"] == {"north": 40, "south": 40, "(missing)": 15}
    assert by["grouped"] == {"all": 80, "(missing)": 15}  # not "no group holds ''"
    assert by["long"] == {"<1": 0, ">=1": 80, "(missing)": 15}  # not counted as length 0
    assert by["has_n"] == {"yes": 40, "no": 40, "(missing)": 15}


def test_examples_missing_the_field_cannot_vanish_from_a_worst_slice_criterion(tmp_path):
    spec, data, parts = _planned(tmp_path, _region_rows(), [{"name": "region", "field": "region", "min_size": 10}])
    # Right on every example with a region, wrong on every one without: the missing slice must fail the bar.
    answers = {"ft": ["yes" if region is not None else "no" for region in REGIONS]}
    (v,) = resolve(_criterion(worst=True, at_least=0.5), {"t": _evidence(spec, data, answers)},
                   partitions={"t": parts})
    assert v.status == "fail" and "(missing)" in v.evidence, v.evidence


def test_integral_numbers_keep_their_form_when_a_value_is_missing(tmp_path):
    rows = [{"q": f"q{i}", "r": "yes", **({"code": 7} if i % 3 else {})} for i in range(30)]
    _, _, (part,) = _planned(tmp_path, rows, [{"name": "code", "field": "code", "groups": {"seven": ["7"]}}])
    assert _sizes(part) == {"seven": 20, "(missing)": 10}  # 7, not 7.0 (pandas reads the column as floats)


def test_term_lists_match_whole_terms_with_symbols_and_any_case(tmp_path):
    texts = ["I write C# daily", "c++ is hard", "nothing here", "STRASSE closed", "CSharp", "see c#x"]
    _, _, (part,) = _planned(tmp_path, [{"q": t, "r": "yes"} for t in texts],
                             [{"name": "lang", "field": "q", "contains_any": ["C#", "C++", "straße"]}])
    assert part.slices == {"yes": (0, 1, 3), "no": (2, 4, 5)}


def test_a_blank_term_is_refused(tmp_path):
    # An empty term would match between any two spaces: every example would be "yes".
    with pytest.raises(ConfigError, match=r"task.yaml: slices.0.contains_any.1: .*pattern"):
        _planned(tmp_path, [{"q": "a b", "r": "yes"}], [{"name": "x", "field": "q", "contains_any": ["card", " "]}])


def test_length_bucket_edges_fall_in_the_upper_bucket(tmp_path):
    texts = ["x" * n for n in (9, 10, 24, 25)]
    _, _, (part,) = _planned(tmp_path, [{"q": t, "r": "yes"} for t in texts],
                             [{"name": "len", "field": "q", "length_buckets": [10, 25]}])
    assert part.slices == {"<10": (0,), "10-24": (1, 2), ">=25": (3,)}


def test_an_empty_slice_makes_a_worst_criterion_insufficient_and_is_refused_before_work(tmp_path):
    rows = [{"q": f"q{i}", "r": "yes", "region": "north"} for i in range(60)]
    spec, data, parts = _planned(tmp_path, rows, [{"name": "region", "field": "region",
                                                   "groups": {"N": ["north"], "S": ["south"]}}])
    assert _sizes(parts[0]) == {"N": 60, "S": 0}
    manifest = _criterion(worst=True, at_least=0.5)
    (v,) = resolve(manifest, {"t": _evidence(spec, data, {"ft": ["yes"] * 60})}, partitions={"t": parts})
    assert v.status == "insufficient" and "S" in v.evidence
    with pytest.raises(ConfigError, match=r"criteria.0.slice: slice 'S' of region on t has 0 test examples"):
        check_against(manifest, "m.yaml", {"t": ["ft"]}, {"t": task_metrics(spec)}, {"t": 60}, 1000,
                      {"t": parts})


def test_a_gap_needs_two_slices(tmp_path):
    rows = [{"q": f"q{i}", "r": "yes", "region": "north"} for i in range(60)]
    spec, data, parts = _planned(tmp_path, rows, ["region"])
    manifest = _criterion(max_gap=0.05)
    (v,) = resolve(manifest, {"t": _evidence(spec, data, {"ft": ["yes"] * 60})}, partitions={"t": parts})
    assert v.status == "insufficient", v.evidence
    with pytest.raises(ConfigError, match=r"criteria.0.slice: region on t has one slice: a gap between slices"):
        check_against(manifest, "m.yaml", {"t": ["ft"]}, {"t": task_metrics(spec)}, {"t": 60}, 1000,
                      {"t": parts})


def _two_regions(tmp_path, n=100):
    rows = [{"q": f"q{i}", "r": "yes", "region": "ab"[i // n]} for i in range(2 * n)]
    return _planned(tmp_path, rows, [{"name": "region", "field": "region", "min_size": 10}])


def _tolerant(**rule):
    """A criterion under a manifest that lets 60% of requests fail (so the slice rules, not the error rate, decide)."""
    return Manifest.model_validate({"max_error_rate": 0.6, "criteria": _criterion(**rule).model_dump()["criteria"]})


def test_a_failed_request_makes_a_gap_insufficient_and_a_worst_slice_count_it_against(tmp_path):
    spec, data, parts = _two_regions(tmp_path)
    # Equal on both slices, a gap of 0 beyond doubt, until one request fails.
    answers = {"ft": ["yes"] * 200}
    ev = _evidence(spec, data, answers)
    (v,) = resolve(_tolerant(max_gap=0.2), {"t": ev}, partitions={"t": parts})
    assert v.status == "pass", v.evidence
    failed = _evidence(spec, data, answers, {"ft": {150}})
    (v,) = resolve(_tolerant(max_gap=0.2), {"t": failed}, partitions={"t": parts})
    assert v.status == "insufficient" and "cannot count them at their worst" in v.evidence, v.evidence
    # Every request on slice b failed: however right the answers were, the slice fails.
    b_failed = _evidence(spec, data, answers, {"ft": set(range(100, 200))})
    (v,) = resolve(_tolerant(worst=True, at_least=0.5), {"t": b_failed}, partitions={"t": parts})
    assert v.status == "fail" and "worst slice b 0 " in v.evidence, v.evidence
    # Wrong on every example, failed on slice b: with `at_most` a failure counts as right (at its worst for the
    # criterion), so slice b fails an at_most bar the answers themselves would pass.
    wrong = _evidence(spec, data, {"ft": ["no"] * 200}, {"ft": set(range(100, 200))})
    (v,) = resolve(_tolerant(worst=True, at_most=0.5), {"t": wrong}, partitions={"t": parts})
    assert v.status == "fail" and "worst slice b 1 " in v.evidence, v.evidence


def test_a_worst_slice_fails_only_beyond_the_corrected_interval(tmp_path):
    rows = [{"q": f"q{i}", "r": "yes", "region": "abc"[i // 100]} for i in range(300)]
    spec, data, parts = _planned(tmp_path, rows, [{"name": "region", "field": "region"}])
    # Slice c right on 60 of 100: its own 95% interval lies below 0.7, its 98.3% one (Bonferroni over the three
    # slices) does not; the others far above.
    answers = ["yes" if i < 200 or i < 260 else "no" for i in range(300)]
    ev = _evidence(spec, data, {"ft": answers})
    c = subsets(ev, parts[0])["c"]
    assert c.interval("exact_match", "ft", 0.95).high < 0.7 < c.interval("exact_match", "ft", 1 - 0.05 / 3).high
    (v,) = resolve(_criterion(worst=True, at_least=0.7), {"t": ev}, partitions={"t": parts})
    assert v.status == "insufficient", v.evidence
    (v,) = resolve(_criterion(worst=True, at_least=0.75), {"t": ev}, partitions={"t": parts})
    assert v.status == "fail", v.evidence


def test_the_gap_of_rates_is_bounded_by_the_slices_corrected_intervals(tmp_path):
    rows = [{"q": f"q{i}", "r": "yes", "region": "abc"[i // 100]} for i in range(300)]
    spec, data, parts = _planned(tmp_path, rows, [{"name": "region", "field": "region"}])
    right = {"a": 90, "b": 80, "c": 70}
    answers = ["yes" if i % 100 < right["abc"[i // 100]] else "no" for i in range(300)]
    subs = subsets(_evidence(spec, data, {"ft": answers}), parts[0])
    iv = gap_interval(subs, "exact_match", "ft", 0.95)
    each = {name: sub.interval("exact_match", "ft", 1 - 0.05 / 3) for name, sub in subs.items()}
    assert iv.value == pytest.approx(0.2)
    assert iv.high == pytest.approx(each["a"].high - each["c"].low)
    assert iv.low == pytest.approx(each["a"].low - each["c"].high)


def test_the_gap_of_a_metric_without_its_own_interval_is_a_simultaneous_bootstrap(tmp_path):
    labels = ["x", "y"]
    rows = [{"q": f"q{i}", "r": labels[i % 2], "region": "ab"[i // 200]} for i in range(400)]
    spec, data, parts = _planned(tmp_path, rows, [{"name": "region", "field": "region"}], kind="classification",
                                 labels=labels, metrics=["macro_f1"])
    rng = np.random.default_rng(0)
    right = np.concatenate([rng.random(200) < 0.95, rng.random(200) < 0.6])
    texts = [ex.reference if ok else labels[1 - labels.index(ex.reference)]
             for ex, ok in zip(data.test, right, strict=True)]
    ev = _evidence(spec, data, {"ft": texts})
    subs = subsets(ev, parts[0])
    iv = gap_interval(subs, "macro_f1", "ft", 0.95)
    observed = subs["a"].interval("macro_f1", "ft", 0.95).value - subs["b"].interval("macro_f1", "ft", 0.95).value
    assert iv.value == pytest.approx(observed) and 0.2 < iv.low < iv.value < iv.high < 0.5
    # Two slices: the gap lies within the 95th percentile of how far the difference of their draws strays.
    strays = np.abs((subs["a"].draws("macro_f1")["ft"] - subs["a"].interval("macro_f1", "ft", 0.95).value)
                    - (subs["b"].draws("macro_f1")["ft"] - subs["b"].interval("macro_f1", "ft", 0.95).value))
    assert iv.high - iv.value == pytest.approx(np.quantile(strays, 0.95))
    for rule, status in (({"max_gap": 0.15}, "fail"), ({"max_gap": 0.6}, "pass"), ({"max_gap": 0.35}, "insufficient")):
        (v,) = resolve(Manifest.model_validate({"criteria": [{"task": "t", "metric": "macro_f1", "candidate": "ft",
                                                              "slice": "region", **rule}]}), {"t": ev},
                       partitions={"t": parts})
        assert v.status == status, (rule, v.evidence)


def _simpson(tmp_path, drops: dict[str, int], n=60):
    """Base right on every example; ft wrong on `drops[slice]` of a slice, and right everywhere else, where the base
    is wrong on half of slice `good` (ft better overall)."""
    slices = ["good", *drops]
    rows = [{"q": f"q{i}", "r": "yes", "region": slices[i // n]} for i in range(n * len(slices))]
    spec, data, parts = _planned(tmp_path, rows, [{"name": "region", "field": "region", "min_size": 10}])
    base = ["no" if s == "good" and i % n < n // 2 else "yes" for i, s in enumerate(r["region"] for r in rows)]
    ft = ["no" if i % n < drops.get(s, 0) else "yes" for i, s in enumerate(r["region"] for r in rows)]
    ev = _evidence(spec, data, {"base": base, "ft": ft})
    report = slice_report({"t": ev}, {"t": parts}, 0.95, {"ft": "base"})
    return {c.slice: c for c in report.comparisons if c.candidate == "ft"}, slices_markdown(report, {"t": ev.metrics})


def test_simpson_flags_need_evidence_corrected_across_slices(tmp_path):
    by, lines = _simpson(tmp_path, {"tiny_drop": 1, "clear_drop": 20, "same": 0})
    assert by["clear_drop"].simpson and not by["clear_drop"].within_noise
    # One wrong answer in 60 is below the base's point estimate, but noise: listed apart, never flagged.
    assert not by["tiny_drop"].simpson and by["tiny_drop"].within_noise
    assert not by["same"].simpson and not by["same"].within_noise
    assert not by["good"].simpson and not by["good"].within_noise
    text = "\n".join(lines)
    flagged, _, noise = text.partition("within noise across")
    assert "region=clear_drop" in flagged and "region=tiny_drop" not in flagged
    assert "region=tiny_drop" in noise and "region=clear_drop" not in noise.split("###")[0]
    assert "| clear_drop ⚑ |" in text and "| tiny_drop |" in text


def test_a_drop_significant_alone_but_not_across_the_slices_is_within_noise(tmp_path):
    # Six wrong of 60 where the base is right: its own interval excludes 0 and McNemar's p is 0.031, but over the
    # slicing's four slices (Holm) it is noise.
    by, _ = _simpson(tmp_path, {"drop": 6, "x": 0, "y": 0})
    assert by["drop"].ci_high < 0 and by["drop"].p_value < 0.05
    assert not by["drop"].simpson and by["drop"].within_noise


def test_a_slice_below_min_examples_cannot_pass(tmp_path):
    spec, data, parts = _two_regions(tmp_path)
    ev = {"t": _evidence(spec, data, {"ft": ["yes"] * 200})}
    criterion = _criterion(worst=True, at_least=0.5).model_dump()["criteria"]
    (v,) = resolve(Manifest.model_validate({"criteria": criterion}), ev, partitions={"t": parts})
    assert v.status == "pass", v.evidence
    (v,) = resolve(Manifest.model_validate({"min_examples": 150, "criteria": criterion}), ev, partitions={"t": parts})
    assert v.status == "insufficient" and "smallest slice has 100 examples" in v.evidence, v.evidence
