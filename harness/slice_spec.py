"""How a task's test examples are cut into slices, as a task or suite writes it (`slices:`): by a field's value, or
by a property derived from it (length buckets, a term list, a mapping of values to groups). Declarative on purpose:
no expression language, nothing evaluated. Assigning examples to slices is `slicing.py`."""

from __future__ import annotations

from itertools import pairwise
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from harness.schema import SafeName, Settings

DERIVATIONS = ("length_buckets", "length_at_least", "contains_any", "groups")


class Slicing(Settings):
    """One partition of the test examples: each example falls in exactly one of its slices."""

    name: SafeName = Field(description="what criteria and reports call it (`slice: <name>`)")
    field: str = Field(description="an input variable, `reference` (the label), or a column of the task's data")
    length_buckets: Annotated[list[Annotated[int, Field(gt=0)]], Field(min_length=1)] | None = Field(
        None, description="ascending edges in characters: [100, 400] gives <100, 100-399, >=400")
    length_at_least: Annotated[int, Field(gt=0)] | None = Field(None, description="two slices: yes (>= N chars), no")
    contains_any: Annotated[list[Annotated[str, Field(pattern=r"\S")]], Field(min_length=1)] | None = Field(
        None, description="two slices: yes (contains one of the terms, ignoring case), no")
    groups: dict[str, list[str]] | str | None = Field(
        None, description="slice -> the field's values it holds (every value must be in one), or a JSON file of "
        "that mapping beside the file that declares it")
    min_size: Annotated[int, Field(ge=2)] = Field(10, description="a smaller slice is reported as too small, "
                                                  "never ranked, and makes a criterion on the slicing insufficient")

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, data: Any) -> Any:
        # `slices: [region]` slices by the field of that name.
        return {"name": data, "field": data} if isinstance(data, str) else data

    @field_validator("length_buckets")
    @classmethod
    def _ascending(cls, edges: list[int] | None) -> list[int] | None:
        if edges is not None and any(b <= a for a, b in pairwise(edges)):
            raise ValueError("edges must be strictly ascending")
        return edges

    @model_validator(mode="after")
    def _one_derivation(self) -> Slicing:
        given = [d for d in DERIVATIONS if getattr(self, d) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of {', '.join(DERIVATIONS)} (got {' and '.join(given)})")
        return self


def unique_names(slicings: list[Slicing]) -> str | None:
    """A name two slicings share, if any."""
    names = [s.name for s in slicings]
    return next((n for n in names if names.count(n) > 1), None)
