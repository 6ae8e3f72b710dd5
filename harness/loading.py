"""YAML in, validated models out: every problem is one ConfigError naming the file and the field as the
user wrote it (a backend's settings sit beside a candidate's common fields; pydantic's union tags are
taken out of the location)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from harness.backends import BACKENDS
from harness.detectors import DETECTORS
from harness.errors import ConfigError


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML file's top-level mapping; any problem is a ConfigError naming the file (and line)."""
    if not path.is_file():
        raise ConfigError(path, None, "file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(path, None, "not a UTF-8 text file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else None
        raise ConfigError(path, where, f"malformed YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise ConfigError(path, None, "expected a mapping at the top level")
    return data


# Registered option models by where they sit: (what users call one, the field that picks it, the models).
# pydantic puts the chosen tag into an error's location.
_UNIONS: dict[str, tuple[str, str, dict[str, type[BaseModel]]]] = {
    "options": ("backend", "backend", dict(BACKENDS.items())),
    "detector": ("detector", "name", dict(DETECTORS.items())),
}


_METRIC_KINDS = ("name", "evaluate", "judge")
# The parts of a location pydantic adds for a validator or a union member, never written by the user.
_SCHEMA_PART = re.compile(r"^(function-(after|before|wrap|plain)|json-or-python|lax-or-strict|chain)\[.*\]$")


def _where_and_why(err: Any) -> tuple[str | None, str]:
    """The field path a user wrote (backend options sit beside the common fields) and a readable message."""
    loc = [str(p) for p in err["loc"]]
    msg = err["msg"].removeprefix("Value error, ")
    out: list[str] = []
    i = 0
    while i < len(loc):
        part = loc[i]
        if _SCHEMA_PART.match(part):
            i += 1
            continue
        if i >= 2 and loc[i - 2] == "metrics" and loc[i - 1].isdigit() and part in _METRIC_KINDS:
            i += 1  # the kind of a task's metric entry is told by its own key, not written by the user
            continue
        if part == "source" and loc[i - 1:i] == ["data"] and i + 1 < len(loc):
            i += 2  # a data source's settings sit in the data block as written; `source` and its kind are ours
            continue
        if part in _UNIONS:
            kind, tag_field, models = _UNIONS[part]
            if part != "options":
                out.append(part)
            tag = loc[i + 1] if i + 1 < len(loc) else None
            if err["type"] == "union_tag_invalid" or err["type"] == "union_tag_not_found":
                out.append(tag_field)
                given = err.get("ctx", {}).get("tag")
                msg = f"unknown {kind}{f' {given!r}' if given else ''}; known: {', '.join(sorted(models))}"
                break
            if tag in models:
                i += 2
                if err["type"] == "extra_forbidden" and i == len(loc) - 1:
                    settings = sorted(f for f in models[tag].model_fields if f != tag_field)
                    msg = f"not a setting of {kind} {tag} (its settings: {', '.join(settings)})"
                elif err["type"] == "missing" and i == len(loc) - 1:
                    msg = f"{kind} `{tag}` needs `{loc[i]}`"
                continue
        out.append(part)
        i += 1
    return ".".join(out) or None, msg


def validate(model: type[BaseModel], data: dict[str, Any], path: Path | str, **extra: Any) -> Any:
    """The model validated from data; the first error as a ConfigError naming the file and the field."""
    try:
        return model.model_validate({**data, **extra})
    except ValidationError as exc:
        field, msg = _where_and_why(exc.errors()[0])
        raise ConfigError(path, field, msg) from None
