"""Task data from Hugging Face `datasets`: a hub id (from the local cache when offline), a local dataset folder of
data files, or a dataset written with `save_to_disk`. Class-label columns become their label names; the resolved
revision and each split's fingerprint identify the content in run.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from harness.errors import ConfigError, first_line
from harness.schema import Settings
from harness.sources.base import DataSource, Role, Table, register


class DatasetSplits(Settings):
    test: str = "test"
    train: str | None = Field("train", description="optional unless named: a dataset without it has no train rows")


class DatasetSpec(Settings):
    """Rows from Hugging Face `datasets`: a hub id or local dataset folder, or a folder written by save_to_disk."""

    id: str | None = Field(None, description="hub id (e.g. PolyAI/banking77; offline it must be in the datasets "
                           "cache), or a local folder of data files relative to the task")
    saved: str | None = Field(None, description="a folder written by Dataset(Dict).save_to_disk, relative to the task")
    config: str | None = Field(None, description="the dataset's configuration (subset) name")
    revision: str | None = Field(None, description="commit, tag or branch on the hub; pin it for repeatable runs")
    splits: DatasetSplits = DatasetSplits()

    @model_validator(mode="after")
    def _one_place(self) -> DatasetSpec:
        if (self.id is None) == (self.saved is None):
            raise ValueError("give either `id` or `saved`")
        if self.saved is not None and (self.config or self.revision):
            raise ValueError("`config` and `revision` go with `id`, not with `saved`")
        return self


@register
class HFDatasets(DataSource):
    kind = "datasets"
    summary = "`dataset`"

    dataset: DatasetSpec = Field(description="rows from Hugging Face datasets")

    def _open(self, task_file: Path) -> tuple[dict[str, Any], str]:
        """The dataset's splits by name, and what identifies it (path or id, config, resolved revision)."""
        import datasets

        spec = self.dataset
        if spec.saved is not None:
            path = (task_file.parent / spec.saved).resolve()
            try:
                loaded = datasets.load_from_disk(str(path))
            except (FileNotFoundError, ValueError, OSError) as exc:
                raise ConfigError(task_file, "data.dataset.saved",
                                  f"not a dataset saved with save_to_disk: {path} ({first_line(exc)})") from None
            splits = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {spec.splits.test: loaded}
            return splits, f"saved:{path}"
        assert spec.id is not None
        local = task_file.parent / spec.id
        ref = str(local.resolve()) if local.is_dir() else spec.id
        try:
            builder = datasets.load_dataset_builder(ref, spec.config, revision=spec.revision)
            builder.download_and_prepare()
            splits = {name: builder.as_dataset(split=name) for name in builder.info.splits or {}}
        except Exception as exc:  # the hub client, the cache and the builders each raise their own kinds
            offline = "" if local.is_dir() else " (neither a local folder nor in the datasets cache when offline)"
            raise ConfigError(task_file, "data.dataset.id",
                              f"cannot load dataset {spec.id!r}{offline}: {first_line(exc)}") from None
        config = f"/{spec.config}" if spec.config else ""
        return splits, f"dataset:{ref}{config}@{builder.hash}"

    def tables(self, task_file: Path) -> list[Table]:
        from datasets import ClassLabel

        spec = self.dataset
        splits, identity = self._open(task_file)
        wanted: list[tuple[Role, str, str | None]] = [("test", "test", spec.splits.test),
                                                      ("train", "train", spec.splits.train)]
        out = []
        for role, name, split in wanted:
            if split is None:
                continue
            if split not in splits:
                if role == "train" and "train" not in spec.splits.model_fields_set:
                    continue  # the default train split is optional; one named in the task is not
                raise ConfigError(task_file, f"data.dataset.splits.{name}",
                                  f"no split {split!r} in {identity} (splits: {', '.join(sorted(splits)) or 'none'})")
            data = splits[split]
            frame = data.to_pandas()
            if frame.empty:
                raise ConfigError(task_file, f"data.dataset.splits.{name}", f"split {split!r} of {identity} is empty")
            for column, feature in data.features.items():
                if isinstance(feature, ClassLabel):
                    frame[column] = [feature.int2str(int(v)) if int(v) >= 0 else "" for v in frame[column]]
            out.append(Table(role, frame, f"data.dataset.splits.{name}", f"{identity}:{split}", data._fingerprint))
        return out
