"""vLLM servers started by the harness: one per base model, every LoRA adapter of that base on it.

Each server runs `vllm.entrypoints.openai.api_server` in its own process group on 127.0.0.1 and a free
port, logs into the run directory, and is stopped (SIGTERM to the group, then SIGKILL) when the run ends,
fails or is stopped by a signal (`harness.lifecycle`; the pool is one of its guards). Requests go through
the same streaming OpenAI-compatible client as any other server. On a machine without CUDA the CPU
settings that vllm-cpu needs are applied (see DESIGN.md).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import httpx
from pydantic import Field, field_validator, model_validator

from harness import lifecycle, models
from harness.backends.base import Backend, BackendEnv, BackendOptions, Deployment, register
from harness.backends.hf_local import HFOptions
from harness.backends.openai_compat import ClientOptions, OpenAICompatBackend
from harness.errors import HarnessError
from harness.records import Completion, Request
from harness.schema import Settings

LOG_TAIL_LINES = 8
SECRET_WORDS = ("key", "token", "secret", "password")


class ServeSpec(Settings):
    """How the harness starts a vLLM server for a base model (the guards of every settings model: unknown keys
    refused, numbers finite, true/false never read as a number)."""

    tensor_parallel_size: Annotated[int, Field(ge=1)] = 1
    pipeline_parallel_size: Annotated[int, Field(ge=1)] = 1
    replicas: Annotated[int, Field(ge=1)] = Field(1, description="data-parallel servers; requests round-robin")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    max_model_len: Annotated[int, Field(gt=0)] | None = None
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = 0.9
    max_lora_rank: Annotated[int, Field(gt=0)] = 16
    cpu_kv_cache_gib: Annotated[int, Field(gt=0)] = 2
    prefix_caching: bool = Field(True, description="reuse the KV cache of a shared prompt prefix (a label list, "
                                 "few-shot examples) across requests")
    compile: bool | None = Field(None, description="torch.compile the model (vLLM's default); None: on GPUs only. "
                                 "On a CPU compiling takes ~1 min at start-up for a few per cent of speed")
    startup_timeout_s: Annotated[float, Field(gt=0)] = 600.0
    devices: list[int] = Field(default_factory=list, description="GPU ids, split across replicas in order")
    extra_args: list[str] = Field(default_factory=list)
    api_key_env: str | None = Field(None, description="environment variable holding the API key the server "
                                    "requires (vLLM reads it as VLLM_API_KEY; the harness sends it)")

    @field_validator("extra_args")
    @classmethod
    def _no_secret(cls, args: list[str]) -> list[str]:
        """A secret on the command line reaches the server's log (vLLM prints its arguments), run.json and MLflow:
        it is named by an environment variable instead."""
        for arg in args:
            flag = arg.split("=", 1)[0].lower()
            if flag.startswith("--") and any(word in flag for word in SECRET_WORDS):
                raise ValueError(f"{flag} puts a secret in logs, run.json and MLflow: set serve.api_key_env to the "
                                 "environment variable that holds it")
        return args

    @model_validator(mode="after")
    def _devices_fit(self) -> ServeSpec:
        per_server = self.tensor_parallel_size * self.pipeline_parallel_size
        if self.devices and len(self.devices) != per_server * self.replicas:
            raise ValueError(f"`devices` lists {len(self.devices)} GPUs; tensor x pipeline x replicas needs "
                             f"{per_server * self.replicas}")
        return self

    # Where and how fast a server runs, never what it answers: left out of the generation cache's key.
    output_neutral: ClassVar[frozenset[str]] = frozenset({
        "replicas", "gpu_memory_utilization", "cpu_kv_cache_gib", "startup_timeout_s", "devices", "api_key_env"})

    def resolved_dtype(self) -> str:
        """On GPUs vLLM's own "auto"; on a CPU the native-or-float32 rule (vLLM's CPU build falls back to
        plain torch for bfloat16 on a CPU without native support, many times slower)."""
        return self.dtype if self.dtype != "auto" or _has_cuda() else models.native_dtype()

    def devices_of(self, replica: int) -> list[int]:
        per_server = self.tensor_parallel_size * self.pipeline_parallel_size
        return self.devices[replica * per_server:(replica + 1) * per_server]


@register
class VllmOptions(ClientOptions):
    """A vLLM server the harness starts (one per base model, every adapter of that base on it)."""

    backend: Literal["vllm"] = "vllm"
    serve: ServeSpec = ServeSpec()
    local_weights = True
    packages = ("httpx", "vllm-cpu", "vllm")

    def problems(self, target: Deployment) -> Iterator[tuple[str, str]]:
        yield from super().problems(target)
        if target.lora_rank and target.lora_rank > self.serve.max_lora_rank:
            yield "serve.max_lora_rank", (f"the adapter's LoRA rank {target.lora_rank} exceeds max_lora_rank "
                                          f"{self.serve.max_lora_rank}; vLLM would refuse it")

    def answer_settings(self) -> dict[str, Any]:
        serve = self.serve.model_dump(mode="json", exclude=set(self.serve.output_neutral))
        return {**super().answer_settings(), "serve": {**serve, "dtype": self.serve.resolved_dtype()}}

    def resolved_dtype(self) -> str:
        return self.serve.resolved_dtype()

    def in_process(self) -> BackendOptions:
        # The completions endpoint takes the plain prompt: in process that is a prompt without chat template; the
        # weights compute in the dtype the server would have used.
        return HFOptions(chat=False if self.endpoint == "completions" else None, dtype=self.serve.dtype)

    def in_process_ignores(self) -> list[str]:
        # The endpoint carries over (as the chat setting) and serve.dtype (as the dtype); the rest is the server's.
        client = self.model_fields_set - {"backend", "endpoint", "serve"}
        return sorted(client) + sorted(f"serve.{name}" for name in self.serve.model_fields_set - {"dtype"})

    def open(self, target: Deployment, env: BackendEnv) -> Backend:
        served = [t for t in env.targets if isinstance(t.options, VllmOptions)]
        pool = env.shared("vllm", lambda: ServerPool(served, lambda m: models.resolve(m, env.say),
                                                     env.log_dir or Path("logs")))
        return pool.backend(target, env.extra_body)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    if not path.is_file():
        return "(no log)"
    text = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return " | ".join(text[-lines:])


@dataclass
class ServerGroup:
    """What one server serves: a base model and the adapters of the candidates built on it."""

    model: str  # resolved path or hub id
    served_name: str
    serve: ServeSpec
    adapters: dict[str, str] = field(default_factory=dict)  # candidate name -> adapter dir


class VllmServer:
    def __init__(self, group: ServerGroup, log_dir: Path, replica: int = 0) -> None:
        self.group = group
        self.replica = replica
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"vllm-{group.served_name}-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        g, s = self.group, self.group.serve
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", g.model,
               "--served-model-name", g.served_name, "--host", "127.0.0.1", "--port", str(self.port),
               "--dtype", self.dtype(), "--tensor-parallel-size", str(s.tensor_parallel_size),
               "--pipeline-parallel-size", str(s.pipeline_parallel_size)]
        if s.max_model_len:
            cmd += ["--max-model-len", str(s.max_model_len)]
        cmd.append("--enable-prefix-caching" if s.prefix_caching else "--no-enable-prefix-caching")
        if not (s.compile if s.compile is not None else _has_cuda()):
            cmd.append("--enforce-eager")
        if g.adapters:
            cmd += ["--enable-lora", "--max-lora-rank", str(s.max_lora_rank), "--max-loras", str(len(g.adapters)),
                    "--lora-modules", *[f"{name}={path}" for name, path in g.adapters.items()]]
        if _has_cuda():
            cmd += ["--gpu-memory-utilization", str(s.gpu_memory_utilization)]
        elif self.ranks() == 1:
            # In-process engine on CPU: the multi-process engine starves the API server on few cores
            # and streams tokens in bursts, which ruins TTFT and inter-token figures.
            cmd += ["--distributed-executor-backend", "uni"]
        else:  # tensor or pipeline parallel on a CPU: a worker process per rank, each bound to its own cores
            cmd += ["--distributed-executor-backend", "mp"]
        return cmd + list(s.extra_args)

    def ranks(self) -> int:
        return self.group.serve.tensor_parallel_size * self.group.serve.pipeline_parallel_size

    def cpu_binding(self) -> str:
        """vLLM's CPU backend binds each rank's threads to cores of its own and, left to itself, wants a NUMA node
        per rank (most machines have one): the cores this process may use, split evenly, one group per rank."""
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < self.ranks():
            raise HarnessError(f"vLLM server for {self.group.served_name}: tensor x pipeline parallel {self.ranks()} "
                               f"needs a core per rank on a CPU, and this machine lets the harness use {len(cores)}")
        share = len(cores) // self.ranks()
        groups = [cores[r * share:(r + 1) * share] for r in range(self.ranks())]
        return "|".join(",".join(map(str, group)) for group in groups)

    def dtype(self) -> str:
        return self.group.serve.resolved_dtype()

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        key_env = self.group.serve.api_key_env
        if key_env:
            if not os.environ.get(key_env):
                raise HarnessError(f"environment variable {key_env} (serve.api_key_env) is not set")
            env["VLLM_API_KEY"] = os.environ[key_env]
        devices = self.group.serve.devices_of(self.replica)
        if devices:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, devices))
        if not _has_cuda():
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(self.group.serve.cpu_kv_cache_gib))
            env.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            if self.ranks() > 1:
                env.setdefault("VLLM_CPU_OMP_THREADS_BIND", self.cpu_binding())
        return env

    def start(self) -> None:
        if importlib.util.find_spec("vllm") is None:
            raise HarnessError("backend vllm needs vLLM: pip install -e '.[cpu]' (CPU) or '.[gpu]' (CUDA), or "
                               "`harness run --in-process` to generate with transformers instead")
        with self.log_path.open("w") as log:
            log.write(" ".join(self.command()) + "\n")
            log.flush()
            self.process = lifecycle.start(self.command(), env=self.environment(), stdout=log,
                                           stderr=subprocess.STDOUT)
        (self.log_path.parent / f"{self.log_path.stem}.pid").write_text(f"{self.process.pid}\n")

    def wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if not self.alive():
                code = self.process.returncode if self.process else None
                raise HarnessError(f"vLLM server for {self.group.served_name} failed to start (exit code {code}): "
                                   f"{_tail(self.log_path)} (log: {self.log_path})")
            try:
                if httpx.get(f"{self.url}/health", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise HarnessError(f"vLLM server for {self.group.served_name} not healthy after {timeout_s:.0f} s: "
                                   f"{_tail(self.log_path)} (log: {self.log_path})")
            time.sleep(0.5)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM to the whole process group (vLLM starts workers), SIGKILL if it lingers."""
        if self.process is not None:
            lifecycle.stop(self.process)


class VllmBackend:
    """One candidate's view of shared servers (one, or several data-parallel replicas): requests name the
    base model or the candidate's adapter."""

    def __init__(self, servers: list[VllmServer], served_model: str, options: ClientOptions,
                 extra_body: dict[str, object] | None = None) -> None:
        self.servers = servers
        self.client = OpenAICompatBackend(
            [f"{s.url}/v1" for s in servers], served_model, endpoint=options.endpoint,
            concurrency=options.concurrency, timeout_s=options.timeout_s, max_retries=options.max_retries,
            check=False, extra_body=extra_body, api_key_env=servers[0].group.serve.api_key_env)

    @property
    def dtype(self) -> str:
        return self.servers[0].dtype()

    @property
    def concurrency(self) -> int:
        return self.client.concurrency

    @concurrency.setter
    def concurrency(self, value: int) -> None:
        self.client.concurrency = value

    def generate(self, requests: list[Request], candidate: str, task: str,
                 arrivals_s: list[float] | None = None) -> Iterator[Completion]:
        for completion in self.client.generate(requests, candidate, task, arrivals_s):
            dead = [s for s in self.servers if not s.alive()]
            if not completion.ok and dead:
                # Failures after a server died are not answers; stop, keeping what finished.
                s = dead[0]
                raise HarnessError(
                    f"vLLM server for {s.group.served_name} died mid-run (exit code "
                    f"{s.process.returncode if s.process else None}): {_tail(s.log_path)}"
                    "; finished predictions are kept, `harness run --resume` starts a new server")
            yield completion

    def close(self) -> None:
        """The server is shared; the pool stops it."""


class ServerPool:
    """The vLLM servers of one run, started on first use and all stopped on exit."""

    def __init__(self, targets: list[Deployment], resolve_model: Callable[[str], str], log_dir: Path) -> None:
        self.log_dir = log_dir
        self.groups: dict[str, ServerGroup] = {}
        self.group_of: dict[str, str] = {}
        self.resolve_model = resolve_model
        for target in targets:
            assert isinstance(target.options, VllmOptions)
            serve = target.options.serve
            key = server_key(target.model, serve)
            group = self.groups.setdefault(key, ServerGroup(target.model, _served_name(target.model), serve))
            if target.adapter:
                group.adapters[target.name] = str(Path(target.adapter).resolve())
            self.group_of[target.name] = key
        self.servers: dict[str, list[VllmServer]] = {}
        self.healthy: set[str] = set()
        self._guard = contextlib.ExitStack()

    def start_all(self) -> None:
        """Every server of the run at once: start-up is mostly single-threaded Python (imports, tokenizer,
        engine set-up), so servers started together overlap it, and an idle server costs no CPU while the
        others answer."""
        for key, group in self.groups.items():
            if key not in self.servers:
                group.model = self.resolve_model(group.model)
                self.servers[key] = [VllmServer(group, self.log_dir, i) for i in range(group.serve.replicas)]
                for server in self.servers[key]:
                    server.start()

    def backend(self, candidate: Deployment, extra_body: dict[str, object] | None = None) -> VllmBackend:
        key = self.group_of[candidate.name]
        self.start_all()
        servers = self.servers[key]
        if key not in self.healthy:
            for server in servers:
                server.wait_healthy(self.groups[key].serve.startup_timeout_s)
            self.healthy.add(key)
        for server in servers:
            if not server.alive():
                raise HarnessError(f"vLLM server for {server.group.served_name} is not running: "
                                   f"{_tail(server.log_path)}")
        served = candidate.name if candidate.adapter else servers[0].group.served_name
        assert isinstance(candidate.options, ClientOptions)
        return VllmBackend(servers, served, candidate.options, extra_body)

    def close(self) -> None:
        """Every server at once: SIGTERM to all, then one grace period, not one per server."""
        lifecycle.stop(*[s.process for replicas in self.servers.values() for s in replicas if s.process])

    def __enter__(self) -> ServerPool:
        # Servers never outlive the harness, whoever opened the pool (a run, a bench, a judge at gate time).
        self._guard.enter_context(lifecycle.guard())
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.close()
        finally:
            self._guard.__exit__(*exc)


def server_key(model: str, serve: ServeSpec) -> str:
    """Candidates on the same base model with the same serve block share one server (and its replicas)."""
    return f"{model}|{serve.model_dump_json()}"


def _served_name(model: str) -> str:
    return Path(model).name or model
