"""Latency and throughput under load (`harness bench`), measured the way vLLM's serving benchmark does.

For each load level (a concurrency limit, optionally with Poisson arrivals at a request rate) a few warm-up
requests that are not counted go first, then the measured ones. No request repeats a prompt that any earlier
request of the bench sent (warm-up included): with prefix caching on, a repeated prompt is served from the
cache and its TTFT is a fraction of a real one's. Per level: TTFT, TPOT
((e2e - ttft) / (output tokens - 1)), inter-token latency (all gaps pooled) and end-to-end latency at
p50/p90/p99 in ms, request and output-token throughput, errors, goodput (requests per second that meet
every latency target) and the cost of 1,000 requests at the candidate's `cost_per_hour`.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np

from harness.backends import BACKENDS, BackendEnv, Deployment
from harness.backends.base import LoadBackend
from harness.bench_prompts import LevelPrompts, draw_prompts, poisson_arrivals, random_prompts, read_prompts
from harness.config import Candidate
from harness.errors import ConfigError, HarnessError
from harness.finetune import NotTrained, finetune_all
from harness.json_files import write_json
from harness.lifecycle import guard
from harness.models import adapter_store
from harness.plan import RunPlan, make_plan
from harness.records import Completion
from harness.stats import latency_percentile
from harness.store import ResultsDir, now_iso

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
            if not (math.isfinite(values[f"{key}_ms"]) and values[f"{key}_ms"] > 0):
                raise HarnessError(f"--slo: {part!r}: a target is a positive number of milliseconds")
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
    # Which prompts the level sent (ids as PromptDraw gives them), so a reader can check none was sent twice.
    warmup_prompts: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)

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


def run_levels(backend: LoadBackend, candidate: str, prompts: list[LevelPrompts], levels: list[LoadLevel],
               targets: Targets, cost_per_hour: float, seed: int = 0,
               on_level: Callable[[LevelResult], None] = lambda _r: None) -> list[LevelResult]:
    """Each level on its own prompts (`prompts[i]` for `levels[i]`); its warm-up requests first, not counted."""
    if any(not p.measured for p in prompts):
        raise HarnessError("bench: no prompts to send")
    results = []
    for level, mine in zip(levels, prompts, strict=True):
        backend_concurrency(backend, level.concurrency)
        if mine.warmup:
            list(backend.generate(mine.warmup, candidate, "warmup"))
        arrivals = poisson_arrivals(len(mine.measured), level.rate, seed) if level.rate else None
        started = time.perf_counter()
        completions = list(backend.generate(mine.measured, candidate, "bench", arrivals))
        result = replace(summarise(level, completions, time.perf_counter() - started, targets, cost_per_hour),
                         warmup_prompts=[r.example_id for r in mine.warmup],
                         prompts=[r.example_id for r in mine.measured])
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

    def check(self) -> None:
        """Settings no bench can run with, refused before anything is planned or started."""
        if not self.concurrency:
            raise HarnessError("bench: --concurrency names no level")
        for option, values in (("--concurrency", self.concurrency), ("--rate", self.rates)):
            # NaN compares false with everything: a plain `<= 0` test would let it through.
            if not all(math.isfinite(v) and v > 0 for v in values):
                raise HarnessError(f"{option}: every value must be a positive number, got "
                                   f"{','.join(f'{v:g}' for v in values)}")
        if self.requests < 1:
            raise HarnessError("bench: --requests must be positive")
        if self.warmup < 0:
            raise HarnessError("bench: --warmup must be 0 or more")


def bench_target(run_plan: RunPlan, cand: Candidate, say: Callable[[str], None]) -> Deployment:
    """The candidate as `harness run` serves it: with its `adapter:`, or for a fine-tune with the adapter trained
    for it, found by content hash as `harness run` finds it. Bench never trains, and never measures a base under
    a fine-tune's name: a fine-tune not trained yet is refused."""
    where = f"candidates.{run_plan.suite.candidates.index(cand)}"
    if cand.adapter and not cand.options.local_weights:
        raise ConfigError(run_plan.suite_file, f"{where}.adapter", (
            f"backend {cand.backend} sends requests for {cand.model!r} to a server run elsewhere, which loads no "
            "adapter from here, so bench would measure the model without it; serve the adapter there and name it "
            "as `model`"))
    if cand.finetune is None:
        return cand.deployment()
    say(f"finding the adapter trained for {cand.name} (by the hash of its base, data and settings)")
    try:
        # No data reports: they decide whether training may start, and bench trains nothing.
        adapters = finetune_all(run_plan, [], adapter_store(), say, only=cand.name, lookup_only=True)
    except NotTrained as exc:
        whose = cand.name if exc.candidate == cand.name else f"{exc.candidate}, which {cand.name} continues,"
        raise ConfigError(run_plan.suite_file, f"{where}.finetune", (
            f"candidate {cand.name} is fine-tuned, but {whose} has no adapter trained for its current settings, "
            f"data and base (none at {exc.target}), and benching its base in its place would mislead; train it "
            f"first: harness finetune {run_plan.suite_file} --candidate {cand.name}"
        )) from None
    return cand.deployment(str(adapters[cand.name]))


def bench_suite(suite_file: Path, options: BenchOptions, results_dir: Path, say: Callable[[str], None],
                on_level: Callable[[LevelResult], None]) -> tuple[Path, list[LevelResult]]:
    """Load-test one candidate of a suite; writes latency.json, latency.png and report.md."""
    options.check()
    run_plan = make_plan(suite_file)
    cand = run_plan.suite.candidate(options.candidate)
    if not cand.options.served:
        raise HarnessError(f"{suite_file}: candidate {cand.name} uses backend {cand.backend}; bench needs a "
                           f"served backend ({', '.join(_served_backends())})")
    levels = [LoadLevel(c) for c in options.concurrency] + [LoadLevel(max(options.concurrency), r)
                                                             for r in options.rates]
    tasks = [t for t in run_plan.tasks if cand.runs(t.name)]
    new_tokens = options.output_len or max(t.spec.generation.max_new_tokens for t in tasks)
    if options.prompts_file:
        source, described = read_prompts(options.prompts_file, new_tokens), str(options.prompts_file)
    elif options.random_input_len:
        # As many as the bench sends, so that every request has a prompt of its own without marks.
        source = random_prompts(len(levels) * (options.warmup + options.requests), options.random_input_len,
                                new_tokens, run_plan.suite.seed)
        described = f"random, {options.random_input_len} words"
    else:
        # Task-qualified ids: two tasks may share example ids, and latency.json lists each level's prompts.
        source = [replace(r, example_id=f"{t.name}/{r.example_id}", max_new_tokens=new_tokens)
                  for t in tasks for r in run_plan.requests(t, cand)]
        described = f"the test prompts of {', '.join(t.name for t in tasks)}"
    results_root = ResultsDir(results_dir)
    target = bench_target(run_plan, cand, say)
    # A server this bench starts (weights here) has an empty cache; one run elsewhere may hold these prompts
    # from earlier benches or traffic, so there every prompt carries a mark new to this bench.
    draw = draw_prompts(source, len(levels), options.warmup, options.requests,
                        tag=None if cand.options.local_weights else secrets.token_hex(4))
    if draw.passes > 1:
        say(f"bench: {described} give {draw.distinct} distinct prompts for {len(levels)} levels of "
            f"{options.warmup} + {options.requests} requests; passes 2 to {draw.passes} start each prompt with "
            '"[pass N] " so that no request is answered from the cache an earlier one filled (fewer --requests, '
            "or --random-input-len, sends every prompt unmarked)")
    # A fixed output length needs the server to ignore end-of-sequence (vLLM's extension, as in its benchmark).
    extra = {"ignore_eos": True} if options.output_len else None
    out = results_root.new_bench(cand.name)
    started = now_iso()
    # A signal stops the servers this bench started (Interrupted: the CLI exits 128 + its number).
    with guard(), BackendEnv([target], say, out.logs_dir, extra_body=extra) as env:
        say(f"opening backend {cand.backend} for {cand.name}" + (f" with adapter {target.adapter}"
                                                                  if target.adapter else ""))
        backend = cast(LoadBackend, cand.options.open(target, env))  # a served backend takes arrivals
        try:
            results = run_levels(backend, cand.name, draw.levels, levels, options.targets, cand.cost_per_hour,
                                 run_plan.suite.seed, on_level)
        finally:
            backend.close()
    meta = {"suite": str(suite_file), "started_at": started, "finished_at": now_iso(), "requests": options.requests,
            "warmup": options.warmup, "output_len": options.output_len, "targets": asdict(options.targets),
            "prompts": described, "prompt_draw": draw.record(), "model": cand.model, "adapter": target.adapter}
    write_latency(out.latency_json, cand.name, results, meta)
    plot(results, out.plot_png, f"{cand.name}: latency against throughput")
    out.report_md.write_text(bench_markdown(cand.name, results, meta))
    return out.path, results


def bench_markdown(candidate: str, results: list[LevelResult], meta: dict[str, Any]) -> str:
    draw = meta["prompt_draw"]
    served = f"{meta['model']} with adapter {meta['adapter']}" if meta["adapter"] else meta["model"]
    marks = f", marked {draw['marking']}" if draw["marking"] else ""
    lines = [f"# Load test of {candidate}", "", f"{served}: {meta['requests']} requests per level, each level after "
             f"{meta['warmup']} warm-up requests of its own that are not counted; {meta['started_at']} to "
             f"{meta['finished_at']}.", "",
             f"Prompts: {meta['prompts']} ({draw['distinct']} distinct{marks}). No request, warm-up included, "
             f"sent a prompt an earlier one had sent; {draw['cache']}.", "",
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
