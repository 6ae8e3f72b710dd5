"""Task data from a DVC repository built here (git init, dvc init, dvc add, commit): rows read at a revision with the
commit and DVC's md5 as their identity, an old revision still reading its old rows, and each setting's errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dvc.repo import Repo

from harness.config import load_task
from harness.data import load_task_data
from harness.errors import ConfigError
from tests.conftest import classification_task, keyword_rows, write_jsonl, write_yaml
from tests.test_cli import run_cli

SPLIT = {"test_size": 0.4, "seed": 3}


@pytest.fixture(autouse=True)
def _dvc_here(tmp_path, monkeypatch):
    """DVC's analytics off and its site cache inside the test's folder, never the user's."""
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / "dvc-site-cache"))


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org"}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout.strip()


def _commit_rows(repo: Path, rows: list[dict[str, str]], message: str) -> str:
    """The rows as rows.jsonl, added to DVC and committed; the commit's sha."""
    write_jsonl(repo / "rows.jsonl", rows)
    with Repo(str(repo)) as dvc:
        dvc.add(str(repo / "rows.jsonl"))
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", message)
    return _git(repo, "rev-parse", "HEAD")


@pytest.fixture
def data_repo(tmp_path) -> Path:
    repo = tmp_path / "data-repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    Repo.init(str(repo)).close()
    (repo / "notes.txt").write_text("kept in git, not in DVC\n")
    _commit_rows(repo, keyword_rows(20, seed=1), "first rows")
    _git(repo, "tag", "v1")
    return repo


def _task(root: Path, **dvc: str):
    data = {"dvc": {"repo": "../data-repo", "path": "rows.jsonl", "split": SPLIT, **dvc}, "id": "id",
            "inputs": {"text": "text"}, "reference": "label"}
    return load_task(str(classification_task(root / "task", data=data)))


def _md5(repo: Path) -> str:
    return yaml.safe_load((repo / "rows.jsonl.dvc").read_text())["outs"][0]["md5"]


def test_a_revision_reads_its_own_rows_identified_by_commit_and_md5(tmp_path, data_repo):
    first_sha, first_md5 = _git(data_repo, "rev-parse", "HEAD"), _md5(data_repo)
    # The same rows read as a local file with the same split give the same examples.
    local = load_task_data(load_task(str(classification_task(
        tmp_path / "files", data={"path": str(data_repo / "rows.jsonl"), "split": SPLIT, "id": "id",
                                  "inputs": {"text": "text"}, "reference": "label"}))))
    at_tag = load_task_data(_task(tmp_path, rev="v1"))
    assert (at_tag.test, at_tag.train) == (local.test, local.train)
    # The file is identified by the revision as written and the md5 DVC tracks for it; the commit it resolved to is
    # recorded beside.
    tag_id = f"dvc:{data_repo}@v1:rows.jsonl"
    assert at_tag.files == {tag_id: first_md5} and at_tag.revisions == {tag_id: first_sha}

    head_id = f"dvc:{data_repo}@HEAD:rows.jsonl"
    before = load_task_data(_task(tmp_path))  # rev defaults to HEAD, the last commit
    # A commit that leaves the rows alone changes what HEAD resolves to, not the data's identity: a finished run
    # read at HEAD is still gated.
    (data_repo / "notes.txt").write_text("unrelated\n")
    _git(data_repo, "add", "notes.txt")
    _git(data_repo, "commit", "-q", "-m", "notes")
    unrelated = load_task_data(_task(tmp_path))
    assert unrelated.files == before.files == {head_id: first_md5}
    assert unrelated.revisions == {head_id: _git(data_repo, "rev-parse", "HEAD")} != before.revisions

    second_sha = _commit_rows(data_repo, keyword_rows(20, seed=7), "other rows")
    assert _md5(data_repo) != first_md5
    latest = load_task_data(_task(tmp_path))
    assert latest.files == {head_id: _md5(data_repo)} and latest.revisions == {head_id: second_sha}
    assert {e.id for e in latest.test + latest.train} == {r["id"] for r in keyword_rows(20, seed=7)}
    # The old revision, by tag or by sha, still reads the old rows with the old md5.
    for rev in ("v1", first_sha):
        again = load_task_data(_task(tmp_path, rev=rev))
        assert (again.test, again.train) == (at_tag.test, at_tag.train)
        assert list(again.files.values()) == [first_md5] and list(again.revisions.values()) == [first_sha]


def _git_only(root: Path) -> str:
    repo = root / "git-only"
    repo.mkdir()
    _git(repo, "init", "-q")
    write_jsonl(repo / "rows.jsonl", keyword_rows(5))
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "rows in git")
    return "../git-only"


@pytest.mark.parametrize(("settings", "field", "words"), [
    ({"repo": _git_only}, "data.dvc.repo", "is not a DVC repository"),
    ({"repo": "../no-such-folder"}, "data.dvc.repo", "cannot open '../no-such-folder' as a Git repository"),
    ({"rev": "no-such-tag"}, "data.dvc.rev", "no revision 'no-such-tag'"),
    ({"path": "missing.jsonl"}, "data.dvc.path", "no file missing.jsonl"),
    ({"path": "notes.txt"}, "data.dvc.path", "is not tracked by DVC"),
])
def test_dvc_problems_name_the_task_file_and_setting(tmp_path, data_repo, settings, field, words):
    task = _task(tmp_path, **{k: v(tmp_path) if callable(v) else v for k, v in settings.items()})
    with pytest.raises(ConfigError) as info:
        load_task_data(task)
    assert info.value.field == field and words in info.value.message
    assert str(task.file) in str(info.value)


def test_without_dvc_installed_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "dvc.api", None)  # what an import finds where dvc is not installed
    task = _task(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_task_data(task)
    assert info.value.field == "data.dvc" and "pip install dvc" in info.value.message


def test_an_unknown_revision_is_one_line_and_exit_2(tmp_path, data_repo, monkeypatch, capsys):
    task = _task(tmp_path, rev="v9")
    suite = write_yaml(tmp_path / "suite.yaml", {"name": "dvc", "tasks": [str(task.file)],
                                                  "candidates": [{"name": "c", "model": "m"}]})
    code, err = run_cli(monkeypatch, capsys, "data", "check", str(suite))
    assert code == 2
    [line] = err.strip().splitlines()
    assert f"{task.file}: data.dvc.rev: no revision 'v9'" in line
