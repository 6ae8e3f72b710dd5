import pandas as pd
import pytest

from harness.config import load_task
from harness.data import Example, load_task_data, stratified_sample
from harness.errors import ConfigError
from tests.conftest import classification_task, keyword_rows, write_jsonl, write_yaml


def _task(tmp_path, data, **extra):
    spec = {"name": "t", "kind": "generation", "data": data, "prompt": {"template": "{q}"},
            "metrics": ["exact_match"], **extra}
    return load_task(str(write_yaml(tmp_path / "task.yaml", spec)))


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_loaders_apply_the_field_mapping(tmp_path, fmt):
    frame = pd.DataFrame({"question": ["a?", "b?", "c?"], "answer": ["A", "B", "C"]})
    path = tmp_path / f"data.{fmt}"
    {"jsonl": lambda: frame.to_json(path, orient="records", lines=True),
     "csv": lambda: frame.to_csv(path, index=False),
     "parquet": lambda: frame.to_parquet(path)}[fmt]()
    task = _task(tmp_path, {"test": path.name, "inputs": {"q": "question"}, "reference": "answer"})
    data = load_task_data(task)
    assert [e.inputs for e in data.test] == [{"q": "a?"}, {"q": "b?"}, {"q": "c?"}]
    assert [e.reference for e in data.test] == ["A", "B", "C"]
    assert data.train == []
    assert list(data.files) == [str(path.resolve())]


def test_ids_are_stable_and_content_based(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [{"q": "x", "r": "1"}, {"q": "y", "r": "2"}, {"q": "x", "r": "3"}])
    task = _task(tmp_path, {"test": "d.jsonl", "inputs": {"q": "q"}, "reference": "r"})
    first = [e.id for e in load_task_data(task).test]
    assert first == [e.id for e in load_task_data(task).test]
    assert len(set(first)) == 3 and first[2] == f"{first[0]}-1"
    # Reordering the file keeps each example's id.
    write_jsonl(tmp_path / "d.jsonl", [{"q": "y", "r": "2"}, {"q": "x", "r": "1"}])
    assert [e.id for e in load_task_data(task).test] == [first[1], first[0]]


def test_several_references(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [{"q": "x", "r1": "a", "r2": "b", "r3": ""}])
    task = _task(tmp_path, {"test": "d.jsonl", "inputs": {"q": "q"}, "reference": ["r1", "r2", "r3"]})
    assert load_task_data(task).test[0].references == ["a", "b"]


def test_seeded_split_is_disjoint_and_repeatable(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [{"q": f"q{i}", "r": str(i)} for i in range(50)])
    task = _task(tmp_path, {"path": "d.jsonl", "split": {"test_size": 0.2, "seed": 4}, "inputs": {"q": "q"},
                            "reference": "r"})
    a, b = load_task_data(task), load_task_data(task)
    assert len(a.test) == 10 and len(a.train) == 40
    assert {e.id for e in a.test}.isdisjoint({e.id for e in a.train})
    assert [e.id for e in a.test] == [e.id for e in b.test]


def test_stratified_sample_covers_every_label_and_is_seeded():
    examples = [Example(id=str(i), inputs={}, reference=r["label"]) for i, r in enumerate(keyword_rows(90))]
    sample = stratified_sample(examples, 9, seed=1, stratify=True)
    assert len(sample) == 9
    assert sorted(e.reference for e in sample).count("billing") == 3
    assert [e.id for e in sample] == [e.id for e in stratified_sample(examples, 9, seed=1, stratify=True)]
    assert [e.id for e in sample] != [e.id for e in stratified_sample(examples, 9, seed=2, stratify=True)]


def test_sample_of_banking77_keeps_every_intent():
    task = load_task("banking77")
    data = load_task_data(task, sample=77, seed=0)
    assert len(data.test) == 77
    assert {e.reference for e in data.test} == set(data.labels)


def test_limit_cuts_the_test_split(tmp_path):
    task = load_task(str(classification_task(tmp_path, n_test=12)))
    assert len(load_task_data(task, limit=5).test) == 5


@pytest.mark.parametrize(("mutate", "field", "message"), [
    (lambda p: (p / "test.jsonl").unlink(), "data.test", "data file not found"),
    (lambda p: (p / "test.jsonl").write_text(""), "data.test", "empty"),
    (lambda p: write_jsonl(p / "test.jsonl", [{"id": "1", "text": "x"}]), "data.reference", "column 'label'"),
    (lambda p: write_jsonl(p / "test.jsonl", [{"id": "1", "text": "x", "label": "refund"}]), "labels",
     "does not cover the test data: refund"),
])
def test_bad_data_names_file_and_field(tmp_path, mutate, field, message):
    task = load_task(str(classification_task(tmp_path)))
    mutate(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_task_data(task)
    assert str(task.file) in str(info.value) and field in str(info.value) and message in str(info.value)


def test_shipped_tasks_load():
    sizes = {}
    for name in ("banking77", "support-qa", "legal-plain", "tico19-en-fr"):
        data = load_task_data(load_task(name))
        sizes[name] = (len(data.train), len(data.test))
        assert all(e.references for e in data.test)
    assert sizes["banking77"] == (10003, 3080)
    assert sizes["support-qa"] == (300, 200)
