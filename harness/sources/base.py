"""The data source interface: a task's `data:` block in, tables out (pandas frames with the task's columns), with
what identifies their content for run.json (a file's sha256, a dataset's revision and fingerprint)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal

import pandas as pd

from harness.config import DataSpec, TaskSpec
from harness.registry import Registry

# `all` is one table the task splits into train and test with `data.split`.
Role = Literal["test", "train", "all"]


@dataclass(frozen=True)
class Table:
    role: Role
    frame: pd.DataFrame
    field: str  # the task field that named it, for errors: data.test, data.dataset.splits.test
    identity: str  # the file path, or dataset@revision:split
    digest: str  # sha256 of the file, or the dataset's fingerprint


class DataSource(ABC):
    kind: ClassVar[str]

    @classmethod
    @abstractmethod
    def applies(cls, spec: DataSpec) -> bool:
        """Whether this source reads the given `data:` block."""

    @abstractmethod
    def tables(self, task: TaskSpec) -> list[Table]:
        """The task's tables; a missing file, split or column is a ConfigError naming the task file and field."""


SOURCES: Registry[type[DataSource]] = Registry("data source")


def register(cls: type[DataSource]) -> type[DataSource]:
    SOURCES.add(cls.kind, cls)
    return cls


def source_of(spec: DataSpec) -> DataSource:
    for cls in SOURCES.values():
        if cls.applies(spec):
            return cls()
    raise AssertionError("DataSpec validation admits no data block without a source")
