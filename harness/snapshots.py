"""The suite and manifest a run was made with, from the snapshots its run.json keeps: validated as the settings
they were dumped from (schema-1 suites upgraded first), for gate, monitoring, export and the dashboard. A snapshot
that does not validate is one line naming run.json and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from harness.config import Candidate, Suite
from harness.errors import ConfigError, first_line
from harness.loading import validate
from harness.manifest_spec import Manifest
from harness.run_record import RunRecord, unreadable


def upgrade_suite(suite: dict[str, Any], schema: int) -> dict[str, Any]:
    """A schema-1 run.json wrote every backend's and every detector's settings into each candidate and task
    (defaults included); keep the ones of the backend or detector it uses."""
    if schema >= 2:
        return suite
    from harness.backends import BACKENDS
    from harness.detectors import DETECTORS

    common = set(Candidate.model_fields) - {"options"}
    candidates = []
    for cand in suite.get("candidates", []):
        fields = set(BACKENDS[cand.get("backend", "hf")].model_fields) | common
        candidates.append({k: v for k, v in cand.items() if k in fields})
    tasks = []
    for ref in suite.get("tasks", []):
        if isinstance(ref, dict) and isinstance(ref.get("detector"), dict):
            detector = ref["detector"]
            fields = set(DETECTORS[detector.get("name", "grounding")].model_fields)
            ref = {**ref, "detector": {k: v for k, v in detector.items() if k in fields and v is not None}}
        tasks.append(ref)
    return {**suite, "candidates": candidates, "tasks": tasks}


ModelT = TypeVar("ModelT", bound=BaseModel)


def _validated(model: type[ModelT], data: dict[str, Any], key: str, where: Path) -> ModelT:
    try:
        validated: ModelT = validate(model, data, where)
    except ConfigError as exc:
        raise unreadable(where, f"{key}.{exc.field}" if exc.field else key, exc.message) from None
    return validated


def suite_of(record: RunRecord, where: Path) -> Suite:
    """The suite of a run; `where` is its run.json, for messages."""
    try:
        upgraded = upgrade_suite(record.suite, record.schema_version)
    except (KeyError, TypeError, AttributeError) as exc:  # a schema-1 snapshot naming an unknown backend, or bent
        raise unreadable(where, "suite", first_line(exc)) from None
    return _validated(Suite, upgraded, "suite", where)


def manifest_of(record: RunRecord, where: Path) -> Manifest | None:
    """The manifest a run was started with, if it had one."""
    return None if record.manifest is None else _validated(Manifest, record.manifest, "manifest", where)
