import pytest

from harness.data import Example, TaskData
from harness.data_check import check_task, duplicates, normalise_text, overlap, without_overlap, word_count


def ex(i, text, label="a"):
    return Example(f"e{i}", {"text": text}, label)


def test_normalisation():
    assert normalise_text("  My CARD hasn't   arrived!! ") == "my card hasn t arrived"


def test_planted_duplicates_and_overlap():
    train = [ex(0, "My card is lost"), ex(1, "My card is lost"), ex(2, "my card is LOST!"), ex(3, "pin blocked"),
             ex(4, "top up failed")]
    test = [ex(10, "PIN blocked."), ex(11, "new question"), ex(12, "top up failed")]
    assert duplicates(train) == (1, 1)
    assert overlap(train, test) == ["e10", "e12"]
    assert [e.id for e in without_overlap(train, test)] == ["e0", "e1", "e2"]


def _data(train, test, labels=("a", "b")):
    return TaskData(test=test, train=train, labels=list(labels) if labels else None, files={})


def test_overlap_blocks_unless_allowed():
    train = [ex(i, f"question {i}", "ab"[i % 2]) for i in range(600)]
    test = [ex(1000, "question 5", "b"), ex(1001, "brand new", "a")]
    blocked = check_task("t", _data(train, test), allow_overlap=False, count=word_count, length_unit="words")
    assert blocked.overlap == 1 and blocked.overlap_ids == ["e1000"] and blocked.blocking
    allowed = check_task("t", _data(train, test), allow_overlap=True, count=word_count, length_unit="words")
    assert not allowed.blocking and any("also occur in train" in w for w in allowed.warnings)


def test_balance_size_and_lengths():
    train = [ex(i, "one two three", "a") for i in range(30)] + [ex(100 + i, "one", "b") for i in range(2)]
    test = [ex(200, "one two", "a"), ex(201, "one two three four", "b")]
    report = check_task("t", _data(train, test, labels=("a", "b", "c")), allow_overlap=False, count=word_count,
                        length_unit="words")
    assert report.sizes == {"train": 32, "test": 2}
    assert report.labels == {"a": {"train": 30, "test": 1}, "b": {"train": 2, "test": 1}, "c": {"train": 0, "test": 0}}
    assert report.imbalance == pytest.approx(15)
    assert report.lengths["test"] == {"mean": 3.0, "p50": 3.0, "p95": pytest.approx(3.9), "max": 4}
    text = " ".join(report.warnings)
    assert "1 labels have no training example: c" in text
    assert "imbalance: 15.0x" in text
    assert "only 32 training examples" in text
    assert "train: 30 exact and 0 near duplicates" in text  # 29 repeats of one text, 1 of the other


def test_cli_exit_codes(tmp_path, monkeypatch, capsys, talking_model):
    import yaml

    from tests.conftest import classification_task, write_jsonl, write_yaml
    from tests.test_cli import run_cli

    task = classification_task(tmp_path / "task")
    suite = write_yaml(tmp_path / "s.yaml", {"name": "d", "tasks": [str(task)],
                                             "candidates": [{"name": "c", "model": str(talking_model)}]})
    write_jsonl(task.parent / "test.jsonl", [{"id": "x1", "text": "never seen in training", "label": "billing"}])
    code, _ = run_cli(monkeypatch, capsys, "data", "check", str(suite))
    assert code == 0
    rows = [{"id": "t1", "text": "question 0 about my invoice", "label": "billing"}]
    write_jsonl(task.parent / "train.jsonl", rows)
    write_jsonl(task.parent / "test.jsonl", rows)
    code, err = run_cli(monkeypatch, capsys, "data", "check", str(suite))
    assert code == 1 and "blocking" in err
    data = yaml.safe_load(suite.read_text())
    suite.write_text(yaml.safe_dump({**data, "allow_overlap": True}))
    code, _ = run_cli(monkeypatch, capsys, "data", "check", str(suite))
    assert code == 0
