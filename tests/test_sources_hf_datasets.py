"""Task data from Hugging Face `datasets`, on datasets built here (no hub): a saved DatasetDict with class labels,
a local dataset folder read by a packaged builder, and the errors of each."""

from __future__ import annotations

import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from harness.config import load_task
from harness.data import load_task_data
from harness.errors import ConfigError
from tests.conftest import LABELS, classification_task, keyword_rows, write_yaml
from tests.test_cli import run_cli

FEATURES = Features({"id": Value("string"), "text": Value("string"), "label": ClassLabel(names=LABELS)})


def _saved(tmp_path, n_test=12, n_train=9):
    """The rows of the JSONL classification task, as a saved DatasetDict whose label column is a ClassLabel."""
    def split(rows):
        return Dataset.from_list([{**r, "label": LABELS.index(r["label"])} for r in rows], features=FEATURES)
    DatasetDict({"train": split(keyword_rows(n_train, seed=1)), "validation": split(keyword_rows(n_test, seed=2))}
                ).save_to_disk(str(tmp_path / "saved"))
    return tmp_path / "saved"


def _task(root, dataset, **extra):
    return classification_task(root, data={"dataset": dataset, "id": "id", "inputs": {"text": "text"},
                                           "reference": "label"}, **extra)


def test_a_saved_dataset_gives_the_same_examples_as_the_same_rows_in_files(tmp_path):
    _saved(tmp_path)
    from_files = load_task_data(load_task(str(classification_task(tmp_path / "files"))))
    task = load_task(str(_task(tmp_path, {"saved": "saved", "splits": {"test": "validation"}})))
    from_dataset = load_task_data(task)
    # Class-label integers come back as their names; ids, inputs, references and order are the files' own.
    assert from_dataset.test == from_files.test
    assert from_dataset.train == from_files.train
    [(test_key, fingerprint), (train_key, _)] = from_dataset.files.items()
    assert test_key.startswith("saved:") and test_key.endswith(":validation") and train_key.endswith(":train")
    assert fingerprint == Dataset.load_from_disk(str(tmp_path / "saved" / "validation"))._fingerprint


def test_a_local_dataset_folder_is_read_by_its_builder_with_a_revision_and_fingerprint(tmp_path):
    folder = tmp_path / "my-dataset" / "data"
    folder.mkdir(parents=True)
    for split, rows in (("train", keyword_rows(9, seed=1)), ("test", keyword_rows(12, seed=2))):
        Dataset.from_list(rows).to_csv(str(folder / f"{split}.csv"))
    task = load_task(str(_task(tmp_path, {"id": "my-dataset"})))
    data = load_task_data(task)
    assert [e.reference for e in data.test] == [r["label"] for r in keyword_rows(12, seed=2)]
    assert len(data.train) == 9
    keys = list(data.files)
    assert all("@" in k for k in keys) and keys[0].endswith(":test")
    assert len(set(data.files.values())) == 2  # each split's own fingerprint
    # The same content gives the same identity; changed rows give another fingerprint.
    assert load_task_data(task).files == data.files
    Dataset.from_list(keyword_rows(12, seed=5)).to_csv(str(folder / "test.csv"))
    changed = load_task_data(task).files
    assert changed != data.files


@pytest.mark.parametrize(("dataset", "field", "words"), [
    ({"id": "nobody/not-a-dataset-here"}, "data.dataset.id", "neither a local folder nor in the datasets cache"),
    ({"saved": "saved", "splits": {"test": "nope"}}, "data.dataset.splits.test", "no split 'nope'"),
    ({"saved": "saved", "splits": {"test": "validation", "train": "extra"}}, "data.dataset.splits.train",
     "no split 'extra'"),
    ({"saved": "missing-folder"}, "data.dataset.saved", "not a dataset saved with save_to_disk"),
])
def test_dataset_problems_name_the_task_file_and_field(tmp_path, dataset, field, words):
    _saved(tmp_path)
    task = load_task(str(_task(tmp_path, dataset)))
    with pytest.raises(ConfigError) as info:
        load_task_data(task)
    assert info.value.field == field and words in info.value.message
    assert str(task.file) in str(info.value)


def test_a_dataset_block_with_files_too_is_refused_at_load(tmp_path):
    with pytest.raises(ConfigError, match=r"data: `dataset` and `test` are settings of two sources of rows"):
        load_task(str(classification_task(tmp_path, data={"dataset": {"saved": "x"}, "test": "t.jsonl",
                                                          "inputs": {"text": "text"}, "reference": "label"})))


def test_an_unavailable_dataset_is_exit_2_before_any_work(tmp_path, talking_model, monkeypatch, capsys):
    task = _task(tmp_path / "task", {"id": "nobody/not-a-dataset-here", "revision": "v1"})
    suite = write_yaml(tmp_path / "suite.yaml", {"name": "ds", "tasks": [str(task)],
                                                  "candidates": [{"name": "c", "model": str(talking_model)}]})
    code, err = run_cli(monkeypatch, capsys, "run", str(suite), "--results", str(tmp_path / "results"))
    assert code == 2
    [line] = err.strip().splitlines()
    assert "data.dataset.id" in line and "not-a-dataset-here" in line and str(task) in line
    assert not (tmp_path / "results").exists()
