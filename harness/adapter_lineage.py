"""What names a fine-tuned adapter and what its lineage.json records of how it was made.

The adapter folder's name carries a hash of everything that changes the result (base weights, training and
validation rows, prompt, labels, training settings, library versions, the parent adapter), so the same inputs
find the same adapter; the lineage holds those inputs beside the training's own figures (losses, steps, speed).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.config import TaskSpec
from harness.finetune_spec import FinetuneSpec
from harness.records import Example
from harness.store import read_lineage


@dataclass(frozen=True)
class TrainingSet:
    task: TaskSpec
    train: list[Example]
    validation: list[Example]
    labels: list[str] | None


@dataclass(frozen=True)
class AdapterIdentity:
    """The content key naming an adapter, what went into it, and the parent adapter's record (a successor's)."""

    key: str
    inputs: dict[str, Any]
    parent: dict[str, Any] | None

    @property
    def generation(self) -> int:
        return self.parent["generation"] + 1 if self.parent else 1


def weights_digest(model_dir: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("*.json")):
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for block in iter(partial(handle.read, 1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def _examples_digest(examples: list[Example]) -> str:
    blob = json.dumps([[e.id, e.inputs, e.reference] for e in examples], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def adapter_key(base_digest: str, data: TrainingSet, spec: FinetuneSpec, chat: bool,
                parent: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """The content hash naming an adapter, and what went into it (the parent adapter's identity included)."""
    inputs = {
        # Only successors carry a parent, so adapters trained before `parent` existed keep their keys.
        **({"parent": parent} if parent is not None else {}),
        "base_sha256": base_digest,
        "train_sha256": _examples_digest(data.train),
        "validation_sha256": _examples_digest(data.validation),
        "prompt": data.task.prompt.model_dump(),
        "labels": data.labels,
        "chat": chat,
        # The extra rows and the parent count by content (train_sha256, the parent record), not by path.
        "config": spec.model_dump(mode="json", exclude={"extra_train", "parent"}),
        "versions": {p: _version(p) for p in ("torch", "transformers", "peft")},
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16], inputs


def identify(base_digest: str, data: TrainingSet, spec: FinetuneSpec, chat: bool,
             parent: Path | None) -> AdapterIdentity:
    parent_info = parent_record(parent) if parent is not None else None
    return AdapterIdentity(*adapter_key(base_digest, data, spec, chat, parent_info), parent_info)


def parent_record(adapter: Path) -> dict[str, Any]:
    """What names a parent adapter in its successor's lineage: its folder, content key, candidate and generation
    (1 for an adapter trained from the base), or its weights' hash when it was not trained here."""
    lineage = read_lineage(adapter)
    weights = hashlib.sha256((adapter / "adapter_model.safetensors").read_bytes()).hexdigest()
    return {"adapter": str(adapter), "adapter_key": lineage.get("adapter_key"), "weights_sha256": weights,
            "candidate": lineage.get("candidate"), "generation": int(lineage.get("generation", 1))}


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
