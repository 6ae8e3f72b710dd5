"""Task data versioned with DVC: files tracked in a DVC repository (a local folder relative to the task, or a Git
URL), read at a Git revision through `dvc.api.DVCFileSystem`. Each file's md5 from DVC (the .dvc file or dvc.lock)
identifies the content in run.json, with the commit the revision resolved to recorded beside it (not part of the
identity: a commit elsewhere in the repository leaves a finished run's data unchanged)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from pydantic import Field

from harness.errors import ConfigError, first_line
from harness.sources.base import DataSource, SplitSpec, Table, register
from harness.sources.files import FileSet, read_frame


class DvcSpec(FileSet):
    """Files of a DVC repository: `test` (and `train`), or one `path` split with `split`, as for local files."""

    repo: str = Field(description="the DVC repository: a local folder (relative to the task) or a Git URL")
    rev: str = Field("HEAD", description="commit, tag or branch; HEAD is the last commit, not uncommitted changes")


@register
class Dvc(DataSource):
    kind = "dvc"
    summary = "`dvc`"

    dvc: DvcSpec = Field(description="rows from files tracked by DVC, at a Git revision")

    def tables(self, task_file: Path) -> list[Table]:
        spec = self.dvc
        fs, ref, commit = self._open(task_file)
        out = []
        for role, setting, path in spec.named():
            where = f"data.dvc.{setting}"
            md5 = self._tracked(fs, path, f"{ref}@{spec.rev}", task_file, where)
            try:
                content = fs.read_bytes(path)
            except Exception as exc:  # DVC fetches from the cache or a remote, each with its own errors
                raise ConfigError(task_file, where, f"cannot read {path} from {ref}@{spec.rev} (is it pushed to "
                                  f"the remote?): {first_line(exc)}") from None
            frame = read_frame(io.BytesIO(content), path, spec.format, task_file, where)
            split = (spec.split or SplitSpec()) if role == "all" else None
            out.append(Table(role, frame, where, f"dvc:{ref}@{spec.rev}:{path}", md5, split, commit))
        return out

    def file_format(self) -> str:
        return self.dvc.format

    def _open(self, task_file: Path) -> tuple[Any, str, str]:
        """DVC's view of the repository at the revision, the repository as opened, and the commit it resolved to."""
        try:
            from dvc.api import DVCFileSystem
            from dvc.scm import RevError
        except ImportError:
            raise ConfigError(task_file, "data.dvc", "reading data through DVC needs dvc: pip install dvc") from None
        spec = self.dvc
        local = task_file.parent / spec.repo
        ref = str(local.resolve()) if local.is_dir() else spec.repo
        try:
            fs = DVCFileSystem(ref, rev=spec.rev)
            commit = fs.repo.get_rev()
        except RevError as exc:
            raise ConfigError(task_file, "data.dvc.rev", f"no revision {spec.rev!r} in {ref}: "
                              f"{first_line(exc)}") from None
        except Exception as exc:  # Git and the clone of a URL raise their own kinds
            raise ConfigError(task_file, "data.dvc.repo", f"cannot open {spec.repo!r} as a Git repository (nor a "
                              f"folder beside the task): {first_line(exc)}") from None
        if fs.repo.dvc_dir is None:
            raise ConfigError(task_file, "data.dvc.repo", f"{ref} is not a DVC repository at {spec.rev} "
                              "(no .dvc folder: run `dvc init`)")
        return fs, ref, commit

    @staticmethod
    def _tracked(fs: Any, path: str, at: str, task_file: Path, where: str) -> str:
        """The file's md5 as DVC records it; a file DVC does not track is refused, having no such identity."""
        try:
            info = fs.info(path)
        except FileNotFoundError:
            raise ConfigError(task_file, where, f"no file {path} in {at}") from None
        if info.get("type") != "file":
            raise ConfigError(task_file, where, f"{path} in {at} is a folder; name a file in it")
        md5 = (info.get("dvc_info") or {}).get("md5")
        if not md5:
            raise ConfigError(task_file, where, f"{path} in {at} is not tracked by DVC (`dvc add` it, or read it "
                              "as a local file with `test:`)")
        return str(md5)
