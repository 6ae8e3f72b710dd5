"""Task data from Hugging Face `datasets`: a hub id (from the local cache when offline), a local dataset folder of
data files, or a dataset written with `save_to_disk`. Class-label columns become their label names; the resolved
revision and each split's fingerprint identify the content in run.json."""

from __future__ import annotations

from typing import Any

from harness.config import DataSpec, TaskSpec
from harness.errors import ConfigError, first_line
from harness.sources.base import DataSource, Role, Table, register


@register
class HFDatasets(DataSource):
    kind = "datasets"

    @classmethod
    def applies(cls, spec: DataSpec) -> bool:
        return spec.dataset is not None

    def _open(self, task: TaskSpec) -> tuple[dict[str, Any], str]:
        """The dataset's splits by name, and what identifies it (path or id, config, resolved revision)."""
        import datasets

        spec = task.data.dataset
        assert spec is not None
        if spec.saved is not None:
            path = (task.base_dir / spec.saved).resolve()
            try:
                loaded = datasets.load_from_disk(str(path))
            except (FileNotFoundError, ValueError, OSError) as exc:
                raise ConfigError(task.file, "data.dataset.saved",
                                  f"not a dataset saved with save_to_disk: {path} ({first_line(exc)})") from None
            splits = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {spec.splits.test: loaded}
            return splits, f"saved:{path}"
        assert spec.id is not None
        local = task.base_dir / spec.id
        ref = str(local.resolve()) if local.is_dir() else spec.id
        try:
            builder = datasets.load_dataset_builder(ref, spec.config, revision=spec.revision)
            builder.download_and_prepare()
            splits = {name: builder.as_dataset(split=name) for name in builder.info.splits or {}}
        except Exception as exc:  # the hub client, the cache and the builders each raise their own kinds
            offline = "" if local.is_dir() else " (neither a local folder nor in the datasets cache when offline)"
            raise ConfigError(task.file, "data.dataset.id",
                              f"cannot load dataset {spec.id!r}{offline}: {first_line(exc)}") from None
        config = f"/{spec.config}" if spec.config else ""
        return splits, f"dataset:{ref}{config}@{builder.hash}"

    def tables(self, task: TaskSpec) -> list[Table]:
        from datasets import ClassLabel

        spec = task.data.dataset
        assert spec is not None
        splits, identity = self._open(task)
        wanted: list[tuple[Role, str, str | None]] = [("test", "test", spec.splits.test),
                                                      ("train", "train", spec.splits.train)]
        out = []
        for role, name, split in wanted:
            if split is None:
                continue
            if split not in splits:
                if role == "train" and "train" not in spec.splits.model_fields_set:
                    continue  # the default train split is optional; one named in the task is not
                raise ConfigError(task.file, f"data.dataset.splits.{name}",
                                  f"no split {split!r} in {identity} (splits: {', '.join(sorted(splits)) or 'none'})")
            data = splits[split]
            frame = data.to_pandas()
            if frame.empty:
                raise ConfigError(task.file, f"data.dataset.splits.{name}", f"split {split!r} of {identity} is empty")
            for column, feature in data.features.items():
                if isinstance(feature, ClassLabel):
                    frame[column] = [feature.int2str(int(v)) if int(v) >= 0 else "" for v in frame[column]]
            out.append(Table(role, frame, f"data.dataset.splits.{name}", f"{identity}:{split}", data._fingerprint))
        return out
