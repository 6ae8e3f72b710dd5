"""The base of every settings model users write (suites, tasks, manifests, backend and detector options):
unknown keys are refused, numbers must be finite, and true/false is not a number (pydantic's lax mode would
read `batch_size: true` as 1)."""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

# A name that becomes part of a path (run directories, prediction files): no separators, no "..".
SafeName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)]


def _takes_bool(annotation: Any) -> bool:
    """Whether a field's type has room for true/false (a bool, Any, or a type pydantic checks itself)."""
    if annotation is bool or annotation is Any:
        return True
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return any(isinstance(a, bool) for a in args)
    if origin is Annotated:
        return _takes_bool(args[0])
    if origin in (typing.Union, types.UnionType):
        return any(_takes_bool(a) for a in args)
    return annotation not in (int, float, type(None))


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, data: Any) -> Any:
        # A model validator, not a field one: pydantic allows no field validator on a discriminator field.
        if isinstance(data, dict):
            for name, value in data.items():
                field = cls.model_fields.get(name)
                if isinstance(value, bool) and field is not None and not _takes_bool(field.annotation):
                    raise ValueError(f"`{name}` is a number, not true/false")
        return data
