"""Bad input through the real command line: one line naming the file and field, exit code 2, no run dir."""

import sys

import pytest
import yaml

from harness.cli import main
from tests.conftest import classification_task, write_jsonl, write_yaml


def run_cli(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["harness", *args])
    with pytest.raises(SystemExit) as info:
        main()
    captured = capsys.readouterr()
    return info.value.code, captured.err


def _suite(tmp_path, talking_model, **changes):
    task = classification_task(tmp_path / "task")
    suite = {"name": "bad", "tasks": [str(task)],
             "candidates": [{"name": "c", "model": str(talking_model)}]}
    suite.update(changes)
    return write_yaml(tmp_path / "suite.yaml", suite), task


def _edit_task(task_file, **changes):
    data = yaml.safe_load(task_file.read_text())
    data.update(changes)
    task_file.write_text(yaml.safe_dump(data))


CASES = {
    "malformed yaml": (lambda s, t: s.write_text("name: [unclosed\n"), "suite.yaml", "malformed YAML"),
    "unknown suite field": (lambda s, t: write_yaml(s, {**yaml.safe_load(s.read_text()), "candidatez": []}),
                            "suite.yaml: candidatez", "Extra inputs"),
    "unknown candidate field": (
        lambda s, t: write_yaml(s, {**yaml.safe_load(s.read_text()),
                                    "candidates": [{"name": "c", "modle": "x"}]}),
        "suite.yaml: candidates.0", ""),
    "unknown task": (lambda s, t: write_yaml(s, {**yaml.safe_load(s.read_text()), "tasks": ["no-such-task"]}),
                     "suite.yaml: tasks.0.task", "unknown task 'no-such-task'"),
    "unknown metric": (lambda s, t: _edit_task(t, metrics=["accuracy", "bleurt"]), "task.yaml: metrics",
                       "unknown metric 'bleurt'"),
    "metric needs labels": (lambda s, t: _edit_task(t, kind="generation", labels=None, metrics=["accuracy"]),
                            "task.yaml: metrics", "needs the task to define labels"),
    "unknown template slot": (lambda s, t: _edit_task(t, prompt={"template": "{txt}"}), "task.yaml: prompt.template",
                              "unknown slot"),
    "missing data file": (lambda s, t: (t.parent / "test.jsonl").unlink(), "task.yaml: data.test", "not found"),
    "missing column": (lambda s, t: write_jsonl(t.parent / "test.jsonl", [{"id": "1", "txt": "a", "label": "billing"}]),
                       "task.yaml: data.inputs.text", "column 'text'"),
    "empty data set": (lambda s, t: (t.parent / "test.jsonl").write_text(""), "task.yaml: data.test", "empty"),
    "label outside the set": (
        lambda s, t: write_jsonl(t.parent / "test.jsonl", [{"id": "1", "text": "a", "label": "refunds"}]),
        "task.yaml: labels", "refunds"),
    "model path missing": (
        lambda s, t: write_yaml(s, {**yaml.safe_load(s.read_text()),
                                    "candidates": [{"name": "c", "model": "./no/such/model"}]}),
        "suite.yaml: candidates.0.model", "does not exist"),
    "unreachable server": (
        lambda s, t: write_yaml(s, {**yaml.safe_load(s.read_text()),
                                    "candidates": [{"name": "c", "backend": "openai", "model": "m",
                                                    "url": "http://127.0.0.1:9/v1"}]}),
        "suite.yaml: candidates.0.url", "cannot reach http://127.0.0.1:9/v1"),
    "too many shots": (
        lambda s, t: write_yaml(s, {**yaml.safe_load(s.read_text()),
                                    "candidates": [{"name": "c", "model": "gemma-3-270m", "few_shot": 50}]}),
        "suite.yaml: candidates.0.few_shot", "training examples"),
    "corrupt adapter": (
        lambda s, t: (_corrupt_adapter(t.parent / "adapter"),
                      write_yaml(s, {**yaml.safe_load(s.read_text()),
                                     "candidates": [{"name": "c", "model": "gemma-3-270m",
                                                     "adapter": str(t.parent / "adapter")}]})),
        "suite.yaml: candidates.0.adapter", "corrupt adapter weights"),
}


def _corrupt_adapter(folder):
    folder.mkdir()
    (folder / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 8}')
    (folder / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{truncated")


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_exit_2(case, tmp_path, talking_model, monkeypatch, capsys):
    suite, task = _suite(tmp_path, talking_model)
    mutate, where, what = CASES[case]
    mutate(suite, task)
    results = tmp_path / "results"
    code, err = run_cli(monkeypatch, capsys, "run", str(suite), "--results", str(results))
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert where in err and what in err, err
    assert not results.exists() or not any(results.iterdir())


def test_missing_suite_file(tmp_path, monkeypatch, capsys):
    code, err = run_cli(monkeypatch, capsys, "run", str(tmp_path / "nope.yaml"))
    assert code == 2 and "nope.yaml: file not found" in err


def test_unknown_embedded_model(monkeypatch, capsys):
    code, err = run_cli(monkeypatch, capsys, "models", "prepare", "llama-9000")
    assert code == 2 and "unknown embedded model 'llama-9000'" in err


def test_resume_with_nothing_to_resume(tmp_path, talking_model, monkeypatch, capsys):
    suite, _ = _suite(tmp_path, talking_model)
    code, err = run_cli(monkeypatch, capsys, "run", str(suite), "--results", str(tmp_path / "r"), "--resume")
    assert code == 2 and "nothing to resume" in err


def _cli(monkeypatch, capsys, *args):
    """Exit code, stdout and stderr of one command."""
    monkeypatch.setattr(sys, "argv", ["harness", *args])
    with pytest.raises(SystemExit) as info:
        main()
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def test_reviewers_add_prints_a_sign_in_link_and_list_counts_ratings(tmp_path, monkeypatch, capsys):
    import hashlib
    import re

    from harness.ratings import RatingStore, Score

    results = str(tmp_path / "results")
    code, out, _ = _cli(monkeypatch, capsys, "reviewers", "add", "ada", "--results", results,
                        "--host", "review.example", "--port", "8600")
    assert code == 0
    (token,) = re.fullmatch(r"http://review\.example:8600/\?page=Review&token=([\w-]{20,})\n", out).groups()
    assert _cli(monkeypatch, capsys, "reviewers", "add", "root", "--role", "admin", "--results", results)[0] == 0
    store = RatingStore.beside(tmp_path / "results")
    assert store.signed_in(token).name == "ada" and store.signed_in(token + "x") is None
    db = b"".join(p.read_bytes() for p in (tmp_path / "results").glob("ratings.sqlite*"))
    assert token.encode() not in db and hashlib.sha256(token.encode()).hexdigest().encode() in db, \
        "the token is stored only as its hash"
    store.save_score(Score("run", "qa", "e1", "c", "ada", 3, 3, 3))
    code, out, _ = _cli(monkeypatch, capsys, "reviewers", "list", "--results", results)
    assert (code, out) == (0, "ada\treviewer\t1\nroot\tadmin\t0\n")

    for args, says in ((["ada"], "there is a reviewer named 'ada' already"),
                       (["bob", "--role", "boss"], "--role: expected one of reviewer, admin, not 'boss'")):
        code, out, err = _cli(monkeypatch, capsys, "reviewers", "add", *args, "--results", results)
        assert code == 2 and says in err and len(err.splitlines()) == 1 and out == ""

    # A lost link: a new one for the same account, and the old one stops working.
    code, out, _ = _cli(monkeypatch, capsys, "reviewers", "link", "ada", "--results", results)
    (fresh,) = re.fullmatch(r"http://localhost:8501/\?page=Review&token=([\w-]{20,})\n", out).groups()
    assert code == 0 and store.signed_in(fresh).name == "ada" and store.signed_in(token) is None
    code, out, err = _cli(monkeypatch, capsys, "reviewers", "link", "nobody", "--results", results)
    assert code == 2 and "no reviewer named 'nobody'" in err and out == ""


def test_dashboard_beyond_loopback_without_accounts_is_refused(tmp_path, monkeypatch, capsys):
    import os

    def started(*_):
        raise AssertionError("the dashboard was started")

    monkeypatch.setattr(os, "execve", started)  # a missing check fails here instead of becoming the server
    results = tmp_path / "results"
    code, _, err = _cli(monkeypatch, capsys, "dashboard", "--host", "0.0.0.0", "--results", str(results))
    assert code == 2 and len(err.splitlines()) == 1
    assert "--host 0.0.0.0" in err and "harness reviewers add NAME" in err
    assert not (results / "ratings.sqlite").exists(), "the check creates nothing"
