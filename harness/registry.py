"""One kind of registry for every extension point (metrics, backends, detectors): entries found by name,
registered once, and an unknown name answered with the names that exist."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownName(KeyError):
    """A name no entry was registered under; the message lists the known ones."""

    def __str__(self) -> str:
        return str(self.args[0])


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._entries[name] = entry
        return entry

    @contextmanager
    def scoped(self, entries: Mapping[str, T]) -> Iterator[Registry[T]]:
        """The entries registered for the block only (a test's own metric, as a user would register it), removed on
        leaving it; a name already registered is refused as `add` refuses it, before any is added."""
        for name in entries:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
        self._entries.update(entries)
        try:
            yield self
        finally:
            for name in entries:
                del self._entries[name]

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownName(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def values(self) -> list[T]:
        return list(self._entries.values())

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())
