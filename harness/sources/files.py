"""Task data from local files: JSONL, CSV or Parquet, paths relative to the task's YAML file. The settings sit flat in
the `data:` block (`test`, `train`, or `path` with `split`; `format`)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import IO, Literal

import pandas as pd
from pydantic import Field, model_validator

from harness.errors import ConfigError
from harness.schema import Settings
from harness.sources.base import DataSource, Role, SplitSpec, Table, register

SUFFIXES = {".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet"}
Format = Literal["auto", "jsonl", "csv", "parquet"]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_table(path: Path, fmt: str, task_file: Path, field_name: str) -> pd.DataFrame:
    if not path.is_file():
        raise ConfigError(task_file, field_name, f"data file not found: {path}")
    return read_frame(path, str(path), fmt, task_file, field_name)


def read_frame(source: Path | IO[bytes], name: str, fmt: str, task_file: Path, field_name: str) -> pd.DataFrame:
    """A file's rows; its format from `fmt`, else from the suffix of `name`, which errors also show."""
    kind = fmt if fmt != "auto" else SUFFIXES.get(Path(name).suffix)
    try:
        if kind == "jsonl":
            frame = pd.read_json(source, lines=True, dtype=False)
        elif kind == "csv":
            frame = pd.read_csv(source, dtype=str, keep_default_na=False)
        elif kind == "parquet":
            frame = pd.read_parquet(source)
        else:
            setting = f"{field_name.rsplit('.', 1)[0]}.format"  # beside the file's own setting: data.format
            raise ConfigError(task_file, field_name, f"cannot tell the format of {name}; set {setting}")
    except UnicodeDecodeError:
        raise ConfigError(task_file, field_name, f"{name}: not a UTF-8 text file") from None
    except (ValueError, OSError) as exc:
        raise ConfigError(task_file, field_name, f"cannot read {name}: {exc}") from None
    if frame.empty:
        raise ConfigError(task_file, field_name, f"data set is empty: {name}")
    return frame


class FileSet(Settings):
    """Files in the task's columns: `test` (and `train`), or one `path` split into both."""

    test: str | None = None
    train: str | None = None
    path: str | None = Field(None, description="one file to split into train and test with `split`")
    split: SplitSpec | None = None
    format: Format = "auto"

    @model_validator(mode="after")
    def _test_or_path(self) -> FileSet:
        if self.path and (self.test or self.train):
            raise ValueError("give either `path` (with `split`) or `test`/`train`, not both")
        if not self.path and not self.test:
            raise ValueError("`test` (or `path` with `split`) is required")
        return self

    def named(self) -> list[tuple[Role, str, str]]:
        """(role, setting, file as written) of each file given."""
        if self.path:
            return [("all", "path", self.path)]
        given: list[tuple[Role, str | None]] = [("test", self.test), ("train", self.train)]
        return [(role, role, rel) for role, rel in given if rel is not None]


@register
class Files(FileSet, DataSource):
    kind = "files"
    summary = "`test` (or `path` with `split`)"

    def tables(self, task_file: Path) -> list[Table]:
        out = []
        for role, setting, rel in self.named():
            path = (task_file.parent / rel).resolve()
            frame = read_table(path, self.format, task_file, f"data.{setting}")
            split = (self.split or SplitSpec()) if role == "all" else None
            out.append(Table(role, frame, f"data.{setting}", str(path), file_sha256(path), split))
        return out

    def file_format(self) -> str:
        return self.format
