"""What every backend shares: Requests in, Completions out, failures recorded as data; and the registry.

A backend is one module: a pydantic options model (its settings in a candidate, beside the common
fields) registered with `@register`, whose `open` returns the Backend that generates. The suite's
candidates are validated against the registered models, so a setting of the wrong backend is an error
naming the file and field.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar, cast

from harness import models
from harness.records import Completion, Request
from harness.registry import Registry
from harness.schema import Settings

__all__ = ["BACKENDS", "Backend", "BackendEnv", "BackendOptions", "Completion", "Deployment", "Request", "register",
           "truncate_at_stop"]


def truncate_at_stop(text: str, stop: Iterable[str]) -> str:
    cut = len(text)
    for s in stop:
        pos = text.find(s)
        if s and pos != -1:
            cut = min(cut, pos)
    return text[:cut]


class Backend(Protocol):
    """Generates Completions for Requests. Completions are yielded as they finish (any order),
    so the generation stage can persist each one at once. `dtype` is what the weights compute in, where known (None for
    a server run by someone else)."""

    @property
    def dtype(self) -> str | None: ...

    def generate(self, requests: list[Request], candidate: str, task: str) -> Iterator[Completion]: ...

    def close(self) -> None: ...


class LoadBackend(Backend, Protocol):
    """A served backend `harness bench` can drive: a concurrency limit and scheduled arrivals."""

    concurrency: int

    def generate(self, requests: list[Request], candidate: str, task: str,
                 arrivals_s: list[float] | None = None) -> Iterator[Completion]: ...


class BackendOptions(Settings):
    """A backend's own settings in a candidate. Subclasses set `backend: Literal["name"] = "name"`."""

    backend: str
    # Weights that live on this machine: the harness resolves them, can fine-tune them and read their tokenizer.
    local_weights: ClassVar[bool] = False
    # Requests go over HTTP with a concurrency limit, so `harness bench` can load-test it.
    served: ClassVar[bool] = False
    # The PyPI distributions its figures depend on: their installed versions go into run.json.
    packages: ClassVar[tuple[str, ...]] = ()
    # Settings that change how fast it answers, never what: left out of the generation cache's key.
    output_neutral: ClassVar[frozenset[str]] = frozenset()

    def answer_settings(self) -> dict[str, Any]:
        """The settings that change what it answers (`output_neutral` ones left out), an `auto` dtype resolved."""
        return self.model_dump(mode="json", exclude=set(self.output_neutral))

    def resolved_dtype(self) -> str | None:
        """The dtype its weights compute in on this machine, known before opening it (an `auto` resolved); None
        where the weights are someone else's (a server run elsewhere)."""
        return None

    def problems(self, target: Deployment) -> Iterator[tuple[str, str]]:
        """(field, message) for what stops this candidate from running, found before any work: weights that
        live here must be found (embedded, a folder, or in the Hugging Face cache)."""
        problem = models.check_model_ref(target.model) if self.local_weights else None
        if problem:
            yield "model", problem

    def in_process(self) -> BackendOptions | None:
        """The same candidate generated in this process with transformers (`harness run --in-process`), or None
        where the weights are not here (a server run by someone else)."""
        return None

    def in_process_ignores(self) -> list[str]:
        """The settings the user wrote that have no meaning in process (a server's), said when `--in-process` drops
        them rather than dropped silently."""
        return []

    def chat_template(self) -> bool | None:
        """Whether prompts go through the model's chat template (None: when it has one); a fine-tune trains
        on prompts rendered the same way."""
        return None

    @abstractmethod
    def open(self, target: Deployment, env: BackendEnv) -> Backend:
        """The backend that generates for this candidate (loading weights or starting servers as needed)."""


@dataclass(frozen=True)
class Deployment:
    """What a backend needs to know of a candidate."""

    name: str
    model: str
    adapter: str | None
    options: BackendOptions
    lora_rank: int | None = None  # of the adapter, or of the one a fine-tune will train


R = TypeVar("R")


@dataclass
class BackendEnv:
    """The generation stage's surroundings: every deployment of the run (a server may host several), where
    logs go, and resources shared between candidates (one vLLM server per base model), all released on
    exit."""

    targets: list[Deployment]
    say: Callable[[str], None] = print
    log_dir: Path | None = None
    extra_body: dict[str, Any] | None = None  # server-specific request fields (bench's ignore_eos)
    _stack: ExitStack = field(default_factory=ExitStack)
    _shared: dict[str, Any] = field(default_factory=dict)

    def shared(self, key: str, make: Callable[[], R]) -> R:
        """One resource per key for the whole stage; entered as a context manager if it is one."""
        if key not in self._shared:
            resource: Any = make()
            self._shared[key] = self._stack.enter_context(resource) if hasattr(resource, "__exit__") else resource
        return cast(R, self._shared[key])

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> BackendEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


BACKENDS: Registry[type[BackendOptions]] = Registry("backend")

OptionsT = TypeVar("OptionsT", bound=BackendOptions)


def register(cls: type[OptionsT]) -> type[OptionsT]:
    """Class decorator on a backend's options model; its `backend` literal is the name suites use."""
    BACKENDS.add(cls.model_fields["backend"].default, cls)
    return cls
