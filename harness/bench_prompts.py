"""What `harness bench` sends: prompts from a file, at random or from a suite's task, dealt out so that no request
repeats a prompt any earlier request of the bench sent (with prefix caching on, a repeated prompt is served from
the cache and its TTFT is a fraction of a real one's), and the arrival times of a request rate."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.json_files import jsonl_lines
from harness.records import Request


def poisson_arrivals(n: int, rate: float, seed: int) -> list[float]:
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=n)
    return np.concatenate([[0.0], np.cumsum(gaps[:-1])]).tolist()


@dataclass(frozen=True)
class LevelPrompts:
    """What one load level sends: its warm-up requests (not counted), then the measured ones."""

    warmup: list[Request]
    measured: list[Request]


@dataclass(frozen=True)
class PromptDraw:
    """Every level's prompts, none sent twice in the bench. The source's distinct prompts are dealt out in
    order; where the levels need more, each further pass over them starts every prompt with a mark of its
    own ("[pass 2] "), and so does every pass for a server the bench did not start (`tag`), whose cache may
    hold the plain prompts from earlier. A mark at the start shares nothing beyond the chat template's header
    with any request sent before its pass; the marked prompts of one pass still share their instructions with
    each other, as production traffic does, and are a few tokens longer."""

    levels: list[LevelPrompts]
    distinct: int  # distinct prompts in the source
    passes: int  # how many times the source was dealt out; 1 when it sufficed unmarked
    tag: str | None  # in every mark, for a server run elsewhere; None: the server was started for this bench

    @property
    def marking(self) -> str | None:
        """How prompts were marked, in words; None where every prompt went as the source has it."""
        if self.tag is not None:
            return f'"[{self.tag} pass N] " before every prompt'
        return '"[pass N] " before every prompt from pass 2 on' if self.passes > 1 else None

    @property
    def cache(self) -> str:
        if self.tag is not None:
            return ("a server run elsewhere: every prompt carries this bench's mark, so none can be in its prefix "
                    "cache from earlier traffic")
        return "the server was started for this bench with an empty prefix cache"

    def record(self) -> dict[str, Any]:
        return {"distinct": self.distinct, "passes": self.passes, "marking": self.marking, "cache": self.cache,
                "each_prompt_sent_once": True}


def _mark(tag: str | None, turn: int) -> str:
    if tag is None:
        return f"[pass {turn + 1}] " if turn else ""
    return f"[{tag} pass {turn + 1}] "


def _marked(request: Request, tag: str | None, turn: int) -> Request:
    mark = _mark(tag, turn)
    if not mark:
        return request
    first, *rest = request.messages
    # The mark leads both forms (chat messages, plain prompt): the endpoint decides which is sent.
    return replace(request, example_id=f"{request.example_id}+{turn}" if turn else request.example_id,
                   messages=[{**first, "content": mark + first["content"]}, *rest], prompt=mark + request.prompt)


def distinct_prompts(prompts: list[Request]) -> list[Request]:
    """The prompts less any that repeats an earlier one's messages or text (a cache hit either way)."""
    seen_messages: set[str] = set()
    seen_text: set[str] = set()
    out = []
    for r in prompts:
        messages = json.dumps(r.messages, sort_keys=True)
        if messages in seen_messages or r.prompt in seen_text:
            continue
        seen_messages.add(messages)
        seen_text.add(r.prompt)
        out.append(r)
    return out


def draw_prompts(source: list[Request], levels: int, warmup: int, requests: int,
                 tag: str | None = None) -> PromptDraw:
    """`levels` × (`warmup` + `requests`) prompts, each level's warm-up first, none sent twice (see PromptDraw)."""
    pool = distinct_prompts(source)
    if not pool:
        raise HarnessError("bench: no prompts to send")
    per_level = warmup + requests
    dealt = [_marked(pool[k % len(pool)], tag, k // len(pool)) for k in range(levels * per_level)]
    chunks = [dealt[i * per_level:(i + 1) * per_level] for i in range(levels)]
    return PromptDraw([LevelPrompts(c[:warmup], c[warmup:]) for c in chunks], len(pool),
                      -(-len(dealt) // len(pool)), tag)


def read_prompts(path: Path, max_new_tokens: int) -> list[Request]:
    """Prompts from a JSONL file with a `prompt` field (vLLM's custom data set format)."""
    if not path.is_file():
        raise HarnessError(f"{path}: prompts file not found")
    out = []
    for number, line in enumerate(jsonl_lines(path), 1):
        if not line.strip():
            continue
        try:
            prompt = json.loads(line)["prompt"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise HarnessError(f"{path}: line {number} has no `prompt` field") from None
        out.append(Request(f"p{number}", [{"role": "user", "content": prompt}], prompt, max_new_tokens))
    return out


def random_prompts(n: int, input_words: int, max_new_tokens: int, seed: int) -> list[Request]:
    """Prompts of random common words, about `input_words` words each."""
    vocabulary = (
        "the", "card", "account", "transfer", "payment", "bank", "money", "time", "help", "please", "when",
        "how", "why", "what", "my", "your", "order", "balance", "refund", "limit", "fee", "rate", "app",
        "phone", "code", "pin", "top", "up", "cash", "online",
    )
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        prompt = " ".join(rng.choice(vocabulary, size=input_words))
        out.append(Request(f"r{i}", [{"role": "user", "content": prompt}], prompt, max_new_tokens))
    return out
