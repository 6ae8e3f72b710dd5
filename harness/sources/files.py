"""Task data from local files: JSONL, CSV or Parquet, paths relative to the task's YAML file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.config import DataSpec, TaskSpec, file_sha256
from harness.errors import ConfigError
from harness.sources.base import DataSource, Table, register

SUFFIXES = {".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet"}


def read_table(path: Path, fmt: str, task_file: Path, field_name: str) -> pd.DataFrame:
    if not path.is_file():
        raise ConfigError(task_file, field_name, f"data file not found: {path}")
    kind = fmt if fmt != "auto" else SUFFIXES.get(path.suffix)
    try:
        if kind == "jsonl":
            frame = pd.read_json(path, lines=True, dtype=False)
        elif kind == "csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        elif kind == "parquet":
            frame = pd.read_parquet(path)
        else:
            raise ConfigError(task_file, f"{field_name}", f"cannot tell the format of {path}; set data.format")
    except UnicodeDecodeError:
        raise ConfigError(task_file, field_name, f"{path}: not a UTF-8 text file") from None
    except (ValueError, OSError) as exc:
        raise ConfigError(task_file, field_name, f"cannot read {path}: {exc}") from None
    if frame.empty:
        raise ConfigError(task_file, field_name, f"data set is empty: {path}")
    return frame


@register
class Files(DataSource):
    kind = "files"

    @classmethod
    def applies(cls, spec: DataSpec) -> bool:
        return spec.dataset is None

    def tables(self, task: TaskSpec) -> list[Table]:
        spec = task.data
        named = [("all", "data.path", spec.path)] if spec.path else [("test", "data.test", spec.test),
                                                                      ("train", "data.train", spec.train)]
        out = []
        for role, field_name, rel in named:
            if rel is None:
                continue
            path = (task.base_dir / rel).resolve()
            frame = read_table(path, spec.format, task.file, field_name)
            out.append(Table(role, frame, field_name, str(path), file_sha256(path)))  # type: ignore[arg-type]
        return out
