"""A streaming client for any OpenAI-compatible server (vLLM, TGI, llama.cpp, hosted APIs).

Requests run concurrently up to a limit; each is streamed so that time to first token and the gaps
between tokens are measured from the wire. Timeouts, HTTP 429 and 5xx are retried with exponential
backoff; what still fails is recorded on the Completion, never dropped.

A retried request's time to first token and end-to-end latency run from the start of its first attempt
(when it was first sent, after waiting for a free slot under the concurrency limit): the failed attempts and the
backoff between them are time its user waited, so a server that hangs and is retried does not look fast. The
gaps between tokens are those of the attempt that answered; `attempts` says how many there were.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import random
import threading
import time
from collections.abc import Iterator
from itertools import pairwise
from typing import Annotated, Any, ClassVar, Literal

import httpx
from pydantic import Field

from harness.backends.base import Backend, BackendEnv, BackendOptions, Deployment, register, truncate_at_stop
from harness.errors import HarnessError
from harness.records import Completion, Request

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class _Retryable(Exception):
    pass


def unreachable(base_url: str) -> str | None:
    """Why the server at base_url cannot be reached, or None when it answers at all."""
    url = base_url.rstrip("/")
    try:
        httpx.get(f"{url}/models", timeout=10.0)
    except httpx.HTTPError as exc:
        return f"cannot reach {url}: {type(exc).__name__}: {exc}"
    return None


class ClientOptions(BackendOptions):
    """How requests reach an OpenAI-compatible server (shared by every served backend)."""

    endpoint: Literal["chat", "completions"] = "chat"
    concurrency: Annotated[int, Field(gt=0)] = 4
    timeout_s: Annotated[float, Field(gt=0)] = 120.0
    max_retries: Annotated[int, Field(ge=0)] = 3
    served = True
    packages: ClassVar[tuple[str, ...]] = ("httpx",)
    output_neutral: ClassVar[frozenset[str]] = frozenset({"concurrency", "timeout_s", "max_retries"})

    def chat_template(self) -> bool | None:
        # The completions endpoint gets the plain prompt; the chat endpoint applies the server's template.
        return None if self.endpoint == "chat" else False


@register
class OpenAIOptions(ClientOptions):
    """Any OpenAI-compatible server already running (vLLM, TGI, llama.cpp, a hosted API)."""

    backend: Literal["openai"] = "openai"
    url: str = Field(description="base URL of the server, e.g. http://host:8000/v1")
    api_key_env: str | None = Field(None, description="environment variable holding the API key")
    output_neutral: ClassVar[frozenset[str]] = ClientOptions.output_neutral | {"api_key_env"}

    def problems(self, target: Deployment) -> Iterator[tuple[str, str]]:
        problem = unreachable(self.url)
        if problem:
            yield "url", problem

    def open(self, target: Deployment, env: BackendEnv) -> Backend:
        return OpenAICompatBackend(self.url, target.model, endpoint=self.endpoint, concurrency=self.concurrency,
                                   timeout_s=self.timeout_s, max_retries=self.max_retries,
                                   api_key_env=self.api_key_env, extra_body=env.extra_body)


class OpenAICompatBackend:
    dtype: str | None = None  # the server's business

    def __init__(self, url: str | list[str], model: str, endpoint: str = "chat", concurrency: int = 4,
                 timeout_s: float = 120.0, max_retries: int = 3, api_key_env: str | None = None, backoff_s: float = 0.5,
                 check: bool = True, extra_body: dict[str, Any] | None = None) -> None:
        # Several URLs are data-parallel replicas of one model: requests go round-robin across them.
        self.base_urls = [u.rstrip("/") for u in ([url] if isinstance(url, str) else url)]
        self.model = model
        self.endpoint = endpoint
        self.concurrency = concurrency
        self.timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.extra_body = dict(extra_body or {})  # server-specific fields, e.g. vLLM's ignore_eos for load tests
        self.headers = {"Content-Type": "application/json"}
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise HarnessError(f"environment variable {api_key_env} (api_key_env) is not set")
            self.headers["Authorization"] = f"Bearer {key}"
        if check:
            self._check_reachable()

    def _check_reachable(self) -> None:
        for url in self.base_urls:
            problem = unreachable(url)
            if problem:
                raise HarnessError(problem)

    def _payload(self, request: Request, replica: int) -> tuple[str, dict[str, Any]]:
        base_url = self.base_urls[replica % len(self.base_urls)]
        body: dict[str, Any] = {
            "model": self.model, "max_tokens": request.max_new_tokens, "temperature": request.temperature,
            "stream": True, "stream_options": {"include_usage": True},
        }
        if request.stop:
            body["stop"] = list(request.stop)
        body.update(self.extra_body)
        if self.endpoint == "chat":
            body["messages"] = request.messages
            return f"{base_url}/chat/completions", body
        body["prompt"] = request.prompt
        return f"{base_url}/completions", body

    async def _stream_once(self, client: httpx.AsyncClient, request: Request, candidate: str, task: str,
                           replica: int, started: float) -> Completion:
        """One attempt; its latencies run from `started`, the first attempt's start (see the module)."""
        url, body = self._payload(request, replica)
        chunk_times: list[float] = []
        parts: list[str] = []
        usage: dict[str, Any] = {}
        ended_well = False  # [DONE] or a finish reason: without either the stream was cut mid-answer
        async with client.stream("POST", url, json=body, headers=self.headers) as response:
            if response.status_code in RETRYABLE_STATUS:
                raise _Retryable(f"HTTP {response.status_code} from {url}")
            if response.status_code >= 400:
                detail = (await response.aread()).decode(errors="replace")[:300]
                return Completion(request.example_id, candidate, task, "",
                                  error=f"HTTP {response.status_code} from {url}: {detail}")
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    ended_well = True
                    break
                event = json.loads(data)
                if event.get("usage"):
                    usage = event["usage"]
                for choice in event.get("choices") or []:
                    ended_well = ended_well or bool(choice.get("finish_reason"))
                    chat = self.endpoint == "chat"
                    piece = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
                    if piece:
                        chunk_times.append(time.perf_counter())
                        parts.append(piece)
        if not ended_well:
            raise _Retryable(f"the stream from {url} ended mid-answer (no [DONE])")
        ended = time.perf_counter()
        return Completion(
            example_id=request.example_id, candidate=candidate, task=task,
            text=truncate_at_stop("".join(parts), request.stop).strip(),
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens", len(parts)),
            ttft_s=chunk_times[0] - started if chunk_times else None,
            itl_s=[b - a for a, b in pairwise(chunk_times)],
            e2e_s=ended - started,
        )

    async def _one(self, client: httpx.AsyncClient, gate: asyncio.Semaphore, request: Request, candidate: str,
                   task: str, index: int, delay_s: float = 0.0) -> Completion:
        if delay_s > 0:
            await asyncio.sleep(delay_s)  # a scheduled arrival (load tests)
        async with gate:
            last_error = ""
            started = time.perf_counter()  # the first attempt's start: a retry's latency includes the ones before
            for attempt in range(1, self.max_retries + 2):
                try:
                    # A retry goes to the next replica, which also routes around a sick one.
                    completion = await self._stream_once(client, request, candidate, task, index + attempt - 1,
                                                         started)
                    completion.attempts = attempt
                    return completion
                except (_Retryable, httpx.TransportError, json.JSONDecodeError) as exc:
                    last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                if attempt <= self.max_retries:
                    await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1) * (1 + random.random() / 4))
            return Completion(request.example_id, candidate, task, "", attempts=self.max_retries + 1,
                              error=f"failed after {self.max_retries + 1} attempts: {last_error}")

    def generate(self, requests: list[Request], candidate: str, task: str,
                 arrivals_s: list[float] | None = None) -> Iterator[Completion]:
        """Completions as they finish. `arrivals_s` optionally schedules each request's send time (seconds
        after the start), for open-loop load such as Poisson arrivals; the concurrency limit still holds."""
        done: queue.Queue[Completion | BaseException] = queue.Queue()
        delays = arrivals_s or [0.0] * len(requests)

        async def run_all() -> None:
            gate = asyncio.Semaphore(self.concurrency)
            limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
            async with httpx.AsyncClient(timeout=self.timeout, limits=limits) as client:
                tasks = [asyncio.create_task(self._one(client, gate, r, candidate, task, i, d))
                         for i, (r, d) in enumerate(zip(requests, delays, strict=True))]
                for finished in asyncio.as_completed(tasks):
                    done.put(await finished)

        def worker() -> None:
            try:
                asyncio.run(run_all())
            except BaseException as exc:  # surfaced in the caller's thread
                done.put(exc)

        thread = threading.Thread(target=worker, daemon=True)
        thread.start()
        for _ in requests:
            item = done.get()
            if isinstance(item, BaseException):
                raise item
            yield item
        thread.join()

    def close(self) -> None:
        pass
