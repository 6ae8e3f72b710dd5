"""The data source interface: a source is the settings model of its part of a task's `data:` block (files: `test`,
`train`, `path`…; `dataset: {…}`; `dvc: {…}`), registered, whose `tables` reads the rows (pandas frames with the
task's columns) with what identifies their content for run.json (a file's sha256, a dataset's revision and
fingerprint, a DVC commit and md5). The block's own keys tell which source it uses: the fields of each model."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import pandas as pd
from pydantic import Field

from harness.registry import Registry
from harness.schema import Settings

# `all` is one table the task splits into train and test with the table's `split`.
Role = Literal["test", "train", "all"]


class SplitSpec(Settings):
    """A seeded split of one table into train and test."""

    test_size: Annotated[float, Field(gt=0, lt=1)] = 0.2
    seed: Annotated[int, Field(ge=0)] = 0


@dataclass(frozen=True)
class Table:
    role: Role
    frame: pd.DataFrame
    field: str  # the task field that named it, for errors: data.test, data.dataset.splits.test
    identity: str  # the file path, or dataset@revision:split, or dvc:repo@rev:path
    digest: str  # sha256 of the file, or the dataset's fingerprint, or DVC's md5
    split: SplitSpec | None = None  # how an `all` table splits into train and test
    # What a moving revision (a branch, HEAD) resolved to when read: recorded, but not part of the identity, so a
    # commit that leaves the rows alone does not make a finished run's data look changed.
    resolved: str | None = None


class DataSource(Settings):
    """A source's settings as the task writes them, and how it reads them. Subclasses set `kind` (the registry's
    name) and `summary` (how a task names it, for errors); their fields are the keys that choose them."""

    kind: ClassVar[str]
    summary: ClassVar[str]

    @abstractmethod
    def tables(self, task_file: Path) -> list[Table]:
        """The task's tables (paths relative to the task file's folder); a missing file, split or revision is a
        ConfigError naming the task file and the field as written."""

    def file_format(self) -> str:
        """The format of other files in the task's columns (a fine-tune's extra rows): told by their suffix
        unless the source names one."""
        return "auto"


SOURCES: Registry[type[DataSource]] = Registry("data source")


def register(cls: type[DataSource]) -> type[DataSource]:
    # A key may choose one source only, or a block could not say which source it means.
    for other in SOURCES.values():
        shared = sorted(cls.model_fields.keys() & other.model_fields.keys())
        if shared:
            raise ValueError(f"data source {cls.kind!r} claims {', '.join(shared)}, settings of {other.kind!r}")
    SOURCES.add(cls.kind, cls)
    return cls


def claiming(keys: Iterable[str]) -> dict[str, type[DataSource]]:
    """The registered sources whose settings the keys are, by the first key of each."""
    out: dict[str, type[DataSource]] = {}
    for key in keys:
        for cls in SOURCES.values():
            if key in cls.model_fields and cls not in out.values():
                out[key] = cls
    return out


def either() -> str:
    """The registered sources as a task names them: "`test` (or `path` with `split`), `dataset` or `dvc`"."""
    names = [cls.summary for cls in SOURCES.values()]
    return f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]
