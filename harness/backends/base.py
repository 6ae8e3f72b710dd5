"""What every backend shares: Requests in, Completions out, failures recorded as data."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Request:
    example_id: str
    messages: list[dict[str, str]]
    prompt: str
    max_new_tokens: int
    temperature: float = 0.0
    stop: tuple[str, ...] = ()


@dataclass
class Completion:
    example_id: str
    candidate: str
    task: str
    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    e2e_s: float | None = None
    error: str | None = None
    attempts: int = 1

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> Completion:
        return cls(**json.loads(line))

    @property
    def ok(self) -> bool:
        return self.error is None


def truncate_at_stop(text: str, stop: Iterable[str]) -> str:
    cut = len(text)
    for s in stop:
        pos = text.find(s)
        if s and pos != -1:
            cut = min(cut, pos)
    return text[:cut]


class Backend(Protocol):
    """Generates Completions for Requests. Completions are yielded as they finish (any order),
    so the runner can persist each one at once."""

    def generate(self, requests: list[Request], candidate: str, task: str) -> Iterator[Completion]: ...

    def close(self) -> None: ...


BackendFactory = Callable[..., Backend]
_REGISTRY: dict[str, Callable[[], BackendFactory]] = {}


def register(name: str) -> Callable[[Callable[[], BackendFactory]], Callable[[], BackendFactory]]:
    """Register a loader that imports a backend lazily, so `import harness` needs no torch or vLLM."""

    def deco(loader: Callable[[], BackendFactory]) -> Callable[[], BackendFactory]:
        _REGISTRY[name] = loader
        return loader

    return deco


def backend_factory(name: str) -> BackendFactory:
    return _REGISTRY[name]()


def backend_names() -> list[str]:
    return sorted(_REGISTRY)

