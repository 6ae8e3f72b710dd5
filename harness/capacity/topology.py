"""The servers a suite starts, grouped as the vLLM backend groups them (one per base model and serve block, every
adapter of that base on it), and the GPUs each replica lands on."""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.backends.openai_compat import OpenAIOptions
from harness.backends.vllm_server import ServeSpec, VllmOptions, server_key
from harness.config import Suite


@dataclass(frozen=True)
class Server:
    index: int  # the suite position of its first candidate, whose fields name the server in errors
    model: str
    candidates: tuple[str, ...]
    adapters: tuple[str, ...]  # the candidates served as LoRA adapters (given, or trained by the suite)
    serve: ServeSpec
    concurrency: int  # the most requests one candidate keeps in flight; candidates generate one after another

    @property
    def field(self) -> str:
        return f"candidates.{self.index}.serve"

    @property
    def per_replica(self) -> int:
        return self.serve.tensor_parallel_size * self.serve.pipeline_parallel_size

    @property
    def sequences(self) -> int:
        """Concurrent sequences one replica holds: requests go round-robin over the replicas."""
        return math.ceil(self.concurrency / self.serve.replicas)

    @property
    def implicit(self) -> bool:
        """No `devices`: every replica sees every GPU and vLLM starts on the first ones."""
        return not self.serve.devices

    def devices(self) -> list[tuple[int, ...]]:
        """The GPUs of each replica."""
        if self.implicit:
            return [tuple(range(self.per_replica))] * self.serve.replicas
        return [tuple(self.serve.devices_of(r)) for r in range(self.serve.replicas)]


@dataclass(frozen=True)
class Elsewhere:
    """A candidate the harness starts no server for: generated in process, or on a server someone else runs."""

    candidate: str
    model: str
    where: str


def servers_of(suite: Suite) -> list[Server]:
    """The vLLM servers `harness run` would start for the suite, in the order of their first candidate."""
    groups: dict[str, list[int]] = {}
    for i, cand in enumerate(suite.candidates):
        if isinstance(cand.options, VllmOptions):
            groups.setdefault(server_key(cand.model, cand.options.serve), []).append(i)
    servers = []
    for members in groups.values():
        cands = [suite.candidates[i] for i in members]
        options = [c.options for c in cands if isinstance(c.options, VllmOptions)]
        servers.append(Server(members[0], cands[0].model, tuple(c.name for c in cands),
                              tuple(c.name for c in cands if c.adapter or c.finetune), options[0].serve,
                              max(o.concurrency for o in options)))
    return servers


def elsewhere_of(suite: Suite) -> list[Elsewhere]:
    out = []
    for cand in suite.candidates:
        if isinstance(cand.options, VllmOptions):
            continue
        if isinstance(cand.options, OpenAIOptions):
            where = f"its server at {cand.options.url}"
        else:
            where = f"backend {cand.backend}" + (" (in process)" if cand.options.local_weights else "")
        out.append(Elsewhere(cand.name, cand.model, where))
    return out
