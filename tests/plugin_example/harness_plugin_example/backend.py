"""A backend that answers every request with the same text: a stand-in for a team's own serving stack."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from harness.backends import Backend, BackendEnv, BackendOptions, Deployment, register
from harness.records import Completion, Request


class CannedBackend:
    dtype = None

    def __init__(self, answer: str) -> None:
        self.answer = answer

    def generate(self, requests: list[Request], candidate: str, task: str) -> Iterator[Completion]:
        for request in requests:
            yield Completion(request.example_id, candidate, task, self.answer, e2e_s=0.001, ttft_s=0.001)

    def close(self) -> None:
        pass


@register
class CannedOptions(BackendOptions):
    backend: Literal["canned"] = "canned"
    answer: str = "I do not know."
    packages = ("harness-plugin-example",)

    def open(self, target: Deployment, env: BackendEnv) -> Backend:
        return CannedBackend(self.answer)
