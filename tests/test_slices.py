"""Slices: declaration and assignment, metrics per slice, Simpson's trap, and criteria on slices."""

import json

import numpy as np
import pytest

from harness.backends.base import Completion
from harness.config import Suite, TaskRef, load_task
from harness.data import load_task_data
from harness.errors import ConfigError
from harness.manifest import resolve
from harness.manifest_check import check_against
from harness.manifest_spec import Manifest
from harness.metrics.defined import task_metrics
from harness.scoring import TaskEvidence
from harness.slice_scoring import finetune_bases, slice_report
from harness.slicing import declared, meta_columns, partitions
from tests.conftest import write_yaml

# Per region: (examples, base right, fine-tune right). Overall the fine-tune is far better (0.78 against 0.63), but
# on `east` it is much worse than its base.
REGIONS = {"north": (100, 50, 95), "south": (100, 50, 95), "east": (100, 90, 45), "west": (4, 2, 4)}


def _write_task(tmp_path, slices, rows=None):
    rows = rows or [{"q": f"{region} {i}", "r": "yes", "region": region}
                    for region, (n, _, _) in REGIONS.items() for i in range(n)]
    (tmp_path / "t").mkdir(exist_ok=True)
    (tmp_path / "t" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return write_yaml(tmp_path / "t" / "task.yaml", {
        "name": "t", "kind": "generation", "metrics": ["exact_match"], "prompt": {"template": "{q}"},
        "data": {"test": "test.jsonl", "inputs": {"q": "q"}, "reference": "r"}, "slices": slices})


def _planned(tmp_path, slices, ref_slices=()):
    """What plan.plan_tasks does for one task: its slicings, its data with their columns, the partitions."""
    spec = load_task(str(_write_task(tmp_path, slices)))
    ref = TaskRef.model_validate({"task": "t", "slices": list(ref_slices)})
    found = declared(spec, ref, tmp_path / "suite.yaml", 0)
    data = load_task_data(spec, meta_columns=meta_columns(spec, found))
    return spec, data, partitions(found, data.test, data.labels)


@pytest.fixture
def sliced(tmp_path):
    spec, data, parts = _planned(tmp_path, [{"name": "region", "field": "region", "min_size": 10}])
    right = {"base": [], "ft": []}
    for n, base, ft in REGIONS.values():
        right["base"] += [i < base for i in range(n)]
        right["ft"] += [i < ft for i in range(n)]
    completions = {cand: [Completion(ex.id, cand, "t", "yes" if ok else "no") for ex, ok in zip(data.test, r,
                                                                                                    strict=True)]
                   for cand, r in right.items()}
    ev = TaskEvidence(spec, data.test, None, completions, resamples=1000, seed=0, metrics=task_metrics(spec))
    return {"t": ev}, {"t": parts}


def test_a_slice_where_the_finetune_is_worse_than_its_base_is_flagged_and_fails_the_worst_slice(sliced):
    evidence, parts = sliced
    report = slice_report(evidence, parts, 0.95, {"ft": "base"})
    overall = evidence["t"].paired("exact_match", "ft", "base", 0.95)
    assert overall.low > 0  # better overall, beyond doubt
    assert [(c.slice, c.candidate, c.baseline) for c in report.flagged] == [("east", "ft", "base")]
    east = next(c for c in report.comparisons if c.slice == "east" and c.candidate == "ft")
    assert east.delta == pytest.approx(-0.45) and east.ci_high < 0
    gap = next(g for g in report.gaps if g.candidate == "ft")
    assert (gap.worst, gap.best, gap.ranked) == ("east", "north", 3)  # west (4 examples) is never ranked
    assert gap.gap == pytest.approx(0.5) and gap.ci_low <= 0.5 <= gap.ci_high
    (worst,) = resolve(Manifest.model_validate({"criteria": [
        {"task": "t", "metric": "exact_match", "candidate": "ft", "slice": "region", "worst": True,
         "at_least": 0.7}]}), evidence, partitions=_without_west(parts))
    assert worst.status == "fail", worst.evidence
    assert "east" in worst.evidence and "Bonferroni over 3 slices" in worst.evidence
    # On the whole set the same bar passes: only the slices show the failure.
    (whole,) = resolve(Manifest.model_validate({"criteria": [
        {"task": "t", "metric": "exact_match", "candidate": "ft", "at_least": 0.7}]}), evidence)
    assert whole.status == "pass"


def _without_west(parts):
    (region,) = parts["t"]
    return {"t": [type(region)(region.slicing, region.field,
                               {k: v for k, v in region.slices.items() if k != "west"}, region.min_size)]}


@pytest.mark.parametrize(("criterion", "status"), [
    ({"worst": True, "at_least": 0.3}, "pass"),       # east 0.45 [0.35, 0.55]: every slice above
    ({"worst": True, "at_least": 0.5}, "insufficient"),
    ({"worst": True, "at_most": 0.99}, "pass"),          # north 0.95 [0.89, 0.98], every slice below
    ({"worst": True, "at_most": 0.95}, "insufficient"),
    ({"max_gap": 0.1}, "fail"),
    ({"max_gap": 0.7}, "pass"),
    ({"max_gap": 0.5}, "insufficient"),
])
def test_slice_criteria_resolve_to_pass_fail_or_insufficient(sliced, criterion, status):
    evidence, parts = sliced
    (v,) = resolve(Manifest.model_validate({"criteria": [
        {"task": "t", "metric": "exact_match", "candidate": "ft", "slice": "region", **criterion}]}), evidence,
        partitions=_without_west(parts))
    assert v.status == status, v.evidence
    assert v.p_value is not None and (v.p_value < 0.025) == (status == "pass")


def test_a_slice_too_small_makes_a_criterion_insufficient_and_is_refused_before_work(sliced):
    evidence, parts = sliced
    manifest = Manifest.model_validate({"criteria": [
        {"task": "t", "metric": "exact_match", "candidate": "ft", "slice": "region", "worst": True,
         "at_least": 0.3}]})
    (v,) = resolve(manifest, evidence, partitions=parts)
    assert v.status == "insufficient" and "west" in v.evidence
    with pytest.raises(ConfigError, match=r"m.yaml: criteria.0.slice: slice 'west' of region on t has 4 test"):
        check_against(manifest, "m.yaml", {"t": ["base", "ft"]}, {"t": evidence["t"].metrics}, {"t": 304}, 1000,
                      parts)
    with pytest.raises(ConfigError, match=r"criteria.0.slice: task t has no slicing 'product' \(has region\)"):
        check_against(manifest.model_copy(update={"criteria": [manifest.criteria[0].model_copy(
            update={"slice": "product"})]}), "m.yaml", {"t": ["base", "ft"]}, {"t": evidence["t"].metrics},
            {"t": 304}, 1000, parts)


def test_a_failed_request_counts_at_its_worst_in_its_slice(sliced):
    evidence, parts = sliced
    ev = evidence["t"]
    # Every fine-tune answer on east right, but 60 of them failed: counted wrong, the slice fails the bar.
    east = [i for i, ex in enumerate(ev.examples) if ex.meta["region"] == "east"]
    for k, i in enumerate(east):
        ex = ev.examples[i]
        ev.completions["ft"][i] = Completion(ex.id, "ft", "t", "yes", error="timeout" if k < 60 else None)
    manifest = {"max_error_rate": 0.5, "criteria": [
        {"task": "t", "metric": "exact_match", "candidate": "ft", "slice": "region", "worst": True, "at_least": 0.7}]}
    (v,) = resolve(Manifest.model_validate(manifest), evidence, partitions=_without_west(parts))
    assert v.status == "fail" and "east 0.4" in v.evidence


def test_slicings_by_length_terms_and_groups(tmp_path):
    rows = [{"q": q, "r": r, "region": "n"} for q, r in
            [("short", "a"), ("a card question here", "b"), ("my visa card is lost, what now?", "c")]]
    _write_task(tmp_path, [], rows)
    spec = load_task(str(write_yaml(tmp_path / "t" / "task.yaml", {
        "name": "t", "kind": "classification", "metrics": ["accuracy"], "prompt": {"template": "{q}"},
        "labels": ["a", "b", "c"], "data": {"test": "test.jsonl", "inputs": {"q": "q"}, "reference": "r"},
        "slices": [{"name": "length", "field": "q", "length_buckets": [10, 25]},
                   {"name": "mentions_visa", "field": "q", "contains_any": ["VISA", "mastercard"]},
                   {"name": "family", "field": "reference", "groups": "families.json"}, "region"]})))
    (tmp_path / "t" / "families.json").write_text(json.dumps({"first": ["a"], "rest": ["b", "c"]}))
    found = declared(spec, TaskRef(task="t"), tmp_path / "s.yaml", 0)
    data = load_task_data(spec, meta_columns=meta_columns(spec, found))
    by_name = {p.slicing: p.slices for p in partitions(found, data.test, data.labels)}
    assert by_name["length"] == {"<10": (0,), "10-24": (1,), ">=25": (2,)}
    assert by_name["mentions_visa"] == {"yes": (2,), "no": (0, 1)}
    assert by_name["family"] == {"first": (0,), "rest": (1, 2)}
    assert by_name["region"] == {"n": (0, 1, 2)}
    # A label no group holds is refused, naming the file and the field, even when the test data lacks it.
    (tmp_path / "t" / "families.json").write_text(json.dumps({"first": ["a"], "rest": ["b"]}))
    with pytest.raises(ConfigError, match=r"task.yaml: slices.2.groups: no group holds 'c'"):
        partitions(found, data.test, data.labels)


def test_bad_slicings_are_one_line_naming_file_and_field(tmp_path):
    with pytest.raises(ConfigError, match=r"task.yaml: slices.0: .*give at most one of"):
        load_task(str(_write_task(tmp_path, [{"name": "x", "field": "q", "length_at_least": 5,
                                              "contains_any": ["a"]}])))
    with pytest.raises(ConfigError, match=r"suite.yaml: tasks.0.slices.0.field: 'zone' is neither an input"):
        _planned(tmp_path, [], [{"name": "zone", "field": "zone"}])
    with pytest.raises(ConfigError, match=r"suite.yaml: tasks.0.slices.0.name: task t already has a slicing 'region'"):
        _planned(tmp_path, ["region"], ["region"])
    with pytest.raises(ValueError, match="`worst` needs `slice`"):
        Manifest.model_validate({"criteria": [{"task": "t", "metric": "m", "candidate": "c", "worst": True,
                                               "at_least": 0.5}]})
    with pytest.raises(ValueError, match="`slice` goes with `worst: true`"):
        Manifest.model_validate({"criteria": [{"task": "t", "metric": "m", "candidate": "c", "slice": "s",
                                               "at_least": 0.5}]})


def test_a_finetune_knows_its_base_from_the_suite():
    suite = Suite.model_validate({"name": "s", "tasks": ["t"], "candidates": [
        {"name": "big", "model": "other"}, {"name": "zero", "model": "smol"}, {"name": "few", "model": "smol"},
        {"name": "ft", "model": "smol", "adapter": "a/"}, {"name": "orphan", "model": "nobase", "adapter": "b/"}]})
    assert finetune_bases(suite) == {"ft": "zero"}


def test_independent_slices_resample_independently(sliced):
    evidence, parts = sliced
    from harness.slice_scoring import subsets

    subs = subsets(evidence["t"], parts["t"][0])
    north, south = subs["north"].draws("exact_match")["ft"], subs["south"].draws("exact_match")["ft"]
    assert not np.array_equal(north, south)  # same sizes and values: only their own seeds tell them apart


def test_report_md_shows_the_slice_table_with_the_flagged_slice_first(sliced):
    from harness.report_slices import slices_markdown

    evidence, parts = sliced
    lines = slices_markdown(slice_report(evidence, parts, 0.95, {"ft": "base"}), {"t": evidence["t"].metrics})
    table = [line for line in lines if line.startswith("| ") and "[" in line]
    assert table[0].startswith("| east ⚑ | 100 | 0.900 [") and "| 0.450 [" in table[0]
    assert any(line.startswith("| west (too small) | 4 |") for line in table)
    assert "| ft | east 0.450 | north 0.950 | 0.500 [" in "\n".join(lines)
    assert any("Simpson" in line for line in lines)
