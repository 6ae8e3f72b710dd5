"""Latency and throughput under load (`harness bench`), measured the way vLLM's serving benchmark does.

For each load level (a concurrency limit, optionally with Poisson arrivals at a request rate) the same
prompts are sent after a few warm-up requests that are not counted. Per level: TTFT, TPOT
((e2e - ttft) / (output tokens - 1)), inter-token latency (all gaps pooled) and end-to-end latency at
p50/p90/p99 in ms, request and output-token throughput, errors, goodput (requests per second that meet
every latency target) and the cost of 1,000 requests at the candidate's `cost_per_hour`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from harness.backends import BACKENDS, BackendEnv
from harness.backends.base import LoadBackend
from harness.errors import HarnessError
from harness.plan import plan
from harness.records import Completion, Request
from harness.stats import latency_percentile
from harness.store import ResultsDir, now_iso, write_json

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class LoadLevel:
    concurrency: int
    rate: float | None = None  # requests per second, Poisson arrivals; None sends as fast as allowed

    @property
    def label(self) -> str:
        return f"c={self.concurrency}" + (f", {self.rate:g} req/s" if self.rate else "")


@dataclass(frozen=True)
class Targets:
    """Latency targets for goodput, in ms; None means no target."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None

    @classmethod
    def parse(cls, text: str | None) -> Targets:
        if not text:
            return cls()
        values: dict[str, float] = {}
        for part in text.split(","):
            key, _, number = part.partition("=")
            key = key.strip().removesuffix("_ms")
            if key not in ("ttft", "tpot", "e2e"):
                raise HarnessError(f"--slo: unknown target {key!r} (use ttft, tpot, e2e, in ms)")
            try:
                values[f"{key}_ms"] = float(number)
            except ValueError:
                raise HarnessError(f"--slo: {part!r} is not NAME=MILLISECONDS") from None
        return cls(**values)

    def met(self, ttft: float, tpot: float, e2e: float) -> bool:
        return all(limit is None or (not np.isnan(v) and v <= limit)
                   for limit, v in ((self.ttft_ms, ttft), (self.tpot_ms, tpot), (self.e2e_ms, e2e)))


@dataclass
class LevelResult:
    concurrency: int
    rate: float | None
    requests: int
    errors: int
    duration_s: float
    request_throughput: float
    output_throughput: float
    goodput_rps: float
    cost_per_1k_requests: float
    ttft_ms: dict[str, float] = field(default_factory=dict)
    tpot_ms: dict[str, float] = field(default_factory=dict)
    itl_ms: dict[str, float] = field(default_factory=dict)
    e2e_ms: dict[str, float] = field(default_factory=dict)
    first_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile_trio(summary: dict[str, float], digits: int = 1) -> str:
    """"p50 / p90 / p99" of a latency summary."""
    return " / ".join(f"{summary[f'p{q}']:.{digits}f}" for q in PERCENTILES)


def cost_per_1k(cost_per_hour: float, seconds: float, requests: int) -> float:
    """What 1,000 requests cost on a machine billed by the hour, at the throughput seen: `requests` in `seconds`."""
    return cost_per_hour * seconds / 3600 / requests * 1000


def _summary(values: list[float]) -> dict[str, float]:
    arr = np.array([v for v in values if not np.isnan(v)], dtype=float)
    if len(arr) == 0:
        return {"mean": float("nan"), **{f"p{q}": float("nan") for q in PERCENTILES}}
    return {"mean": float(arr.mean()), **{f"p{q}": float(latency_percentile(arr, q)) for q in PERCENTILES}}


def summarise(level: LoadLevel, completions: list[Completion], duration_s: float, targets: Targets,
              cost_per_hour: float) -> LevelResult:
    ok = [c for c in completions if c.ok]
    ttft = [c.ttft_s * 1000 if c.ttft_s is not None else float("nan") for c in ok]
    e2e = [c.e2e_s * 1000 if c.e2e_s is not None else float("nan") for c in ok]
    tpot = [(c.e2e_s - c.ttft_s) * 1000 / (c.completion_tokens - 1)
            if c.ttft_s is not None and c.e2e_s is not None and c.completion_tokens and c.completion_tokens > 1
            else float("nan") for c in ok]
    itl = [gap * 1000 for c in ok for gap in c.itl_s]
    good = sum(targets.met(a, b, c) for a, b, c in zip(ttft, tpot, e2e, strict=True))
    tokens = sum(c.completion_tokens or 0 for c in ok)
    errors = [c for c in completions if not c.ok]
    return LevelResult(
        concurrency=level.concurrency, rate=level.rate, requests=len(ok), errors=len(errors),
        duration_s=duration_s, request_throughput=len(ok) / duration_s, output_throughput=tokens / duration_s,
        goodput_rps=good / duration_s,
        cost_per_1k_requests=cost_per_1k(cost_per_hour, duration_s, len(ok)) if ok else float("nan"),
        ttft_ms=_summary(ttft), tpot_ms=_summary(tpot), itl_ms=_summary(itl), e2e_ms=_summary(e2e),
        first_error=errors[0].error if errors else None,
    )


def poisson_arrivals(n: int, rate: float, seed: int) -> list[float]:
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=n)
    return np.concatenate([[0.0], np.cumsum(gaps[:-1])]).tolist()


def run_levels(backend: LoadBackend, candidate: str, prompts: list[Request], levels: list[LoadLevel],
               warmup: int, targets: Targets, cost_per_hour: float, seed: int = 0,
               on_level: Callable[[LevelResult], None] = lambda _r: None) -> list[LevelResult]:
    """Every level on the same prompts; warm-up requests first, not counted."""
    if not prompts:
        raise HarnessError("bench: no prompts to send")
    results = []
    for level in levels:
        backend_concurrency(backend, level.concurrency)
        if warmup:
            list(backend.generate(prompts[:warmup], candidate, "warmup"))
        arrivals = poisson_arrivals(len(prompts), level.rate, seed) if level.rate else None
        started = time.perf_counter()
        completions = list(backend.generate(prompts, candidate, "bench", arrivals))
        result = summarise(level, completions, time.perf_counter() - started, targets, cost_per_hour)
        on_level(result)
        results.append(result)
    return results


def backend_concurrency(backend: Any, concurrency: int) -> None:
    """Set the client's concurrency limit for the next level (served backends expose it)."""
    if not hasattr(backend, "concurrency"):
        raise HarnessError(f"bench needs a served backend ({', '.join(_served_backends())})")
    backend.concurrency = concurrency


def _served_backends() -> list[str]:
    return [name for name, options in BACKENDS.items() if options.served]


def write_latency(path: Path, candidate: str, results: list[LevelResult], meta: dict[str, Any]) -> None:
    write_json(path, {"candidate": candidate, **meta, "levels": [r.to_dict() for r in results]})


def plot(results: list[LevelResult], out: Path, title: str) -> Path:
    """Latency against throughput, one point per load level (the classic serving curve)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    # Concurrency sweep and request-rate sweep are separate curves, each in order of throughput.
    series = {"concurrency": [r for r in results if r.rate is None], "request rate": [r for r in results if r.rate]}
    for ax, key, name in ((axes[0], "ttft_ms", "TTFT"), (axes[1], "tpot_ms", "TPOT")):
        for sweep, rows in series.items():
            rows = sorted(rows, key=lambda r: r.output_throughput)
            tput = [r.output_throughput for r in rows]
            for q, style in (("p50", "o-"), ("p99", "s--")):
                if rows:
                    ax.plot(tput, [getattr(r, key)[q] for r in rows], style, label=f"{name} {q}, {sweep}")
            for r, x in zip(rows, tput, strict=True):
                ax.annotate(f"c={r.concurrency}" + (f"@{r.rate:g}" if r.rate else ""), (x, getattr(r, key)["p50"]),
                            fontsize=8, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("output tokens / s")
        ax.set_ylabel(f"{name} (ms)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def read_prompts(path: Path, max_new_tokens: int) -> list[Request]:
    """Prompts from a JSONL file with a `prompt` field (vLLM's custom data set format)."""
    if not path.is_file():
        raise HarnessError(f"{path}: prompts file not found")
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
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


@dataclass(frozen=True)
class BenchOptions:
    candidate: str
    concurrency: list[int]
    rates: list[float]
    requests: int
    warmup: int
    prompts_file: Path | None
    random_input_len: int | None
    output_len: int | None
    targets: Targets


def bench_suite(suite_file: Path, options: BenchOptions, results_dir: Path, say: Callable[[str], None],
                on_level: Callable[[LevelResult], None]) -> tuple[Path, list[LevelResult]]:
    """Load-test one candidate of a suite; writes latency.json, latency.png and report.md."""
    the_plan = plan(suite_file)
    cand = the_plan.suite.candidate(options.candidate)
    if not cand.options.served:
        raise HarnessError(f"{suite_file}: candidate {cand.name} uses backend {cand.backend}; bench needs a "
                           f"served backend ({', '.join(_served_backends())})")
    if any(c < 1 for c in options.concurrency) or any(r <= 0 for r in options.rates) or options.requests < 1:
        raise HarnessError("bench: concurrency, rates and --requests must be positive")
    default_new = max(t.spec.generation.max_new_tokens for t in the_plan.tasks)
    new_tokens = options.output_len or default_new
    if options.prompts_file:
        prompts = read_prompts(options.prompts_file, new_tokens)
    elif options.random_input_len:
        prompts = random_prompts(options.requests, options.random_input_len, new_tokens, the_plan.suite.seed)
    else:
        prompts = [r for t in the_plan.tasks for r in the_plan.requests(t, cand)]
        if options.output_len:
            prompts = [Request(r.example_id, r.messages, r.prompt, new_tokens) for r in prompts]
    prompts = [prompts[i % len(prompts)] for i in range(options.requests)]
    # A fixed output length needs the server to ignore end-of-sequence (vLLM's extension, as in its benchmark).
    extra = {"ignore_eos": True} if options.output_len else None
    levels = [LoadLevel(c) for c in options.concurrency] + [LoadLevel(max(options.concurrency), r)
                                                             for r in options.rates]
    out = ResultsDir(results_dir).new_bench(cand.name)
    started = now_iso()
    target = cand.deployment()
    with BackendEnv([target], say, out.logs_dir, extra_body=extra) as env:
        say(f"opening backend {cand.backend} for {cand.name}")
        backend = cast(LoadBackend, cand.options.open(target, env))  # a served backend takes arrivals
        try:
            results = run_levels(backend, cand.name, prompts, levels, options.warmup, options.targets,
                                 cand.cost_per_hour, the_plan.suite.seed, on_level)
        finally:
            backend.close()
    meta = {"suite": str(suite_file), "started_at": started, "finished_at": now_iso(), "requests": options.requests,
            "warmup": options.warmup, "output_len": options.output_len, "targets": asdict(options.targets),
            "prompts": str(options.prompts_file) if options.prompts_file else
            ("random" if options.random_input_len else "suite tasks")}
    write_latency(out.latency_json, cand.name, results, meta)
    plot(results, out.plot_png, f"{cand.name}: latency against throughput")
    out.report_md.write_text(bench_markdown(cand.name, results, meta))
    return out.path, results


def bench_markdown(candidate: str, results: list[LevelResult], meta: dict[str, Any]) -> str:
    lines = [f"# Load test of {candidate}", "", f"{meta['requests']} requests per level ({meta['prompts']}), "
             f"{meta['warmup']} warm-up requests not counted; {meta['started_at']} to {meta['finished_at']}.", "",
             "![latency against throughput](latency.png)", "",
             "| level | req/s | out tok/s | goodput req/s | TTFT p50/p90/p99 ms | TPOT p50/p90/p99 ms | "
             "ITL p50/p90/p99 ms | E2E p50/p90/p99 ms | errors | $ per 1k req |",
             "|---|---:|---:|---:|---|---|---|---|---:|---:|"]
    trio = percentile_trio
    for r in results:
        lines.append(f"| {LoadLevel(r.concurrency, r.rate).label} | {r.request_throughput:.2f} | "
                     f"{r.output_throughput:.1f} | {r.goodput_rps:.2f} | {trio(r.ttft_ms)} | {trio(r.tpot_ms)} | "
                     f"{trio(r.itl_ms)} | {trio(r.e2e_ms)} | {r.errors} | {r.cost_per_1k_requests:.4f} |")
    return "\n".join([*lines, ""])
