"""Latency parity with vLLM's own serving benchmark.

Starts one vLLM server (the embedded SmolLM2-135M-Instruct by default, in this machine's native dtype),
then runs `vllm.benchmarks.serve` (the peer) and `harness bench`'s load loop against it, alternating which
goes first, with the same output length (end of sequence ignored), concurrency and prompt shape. Every run
gets prompts of its own (same length and vocabulary, a new seed), so neither side is served from the
prefix cache the other one filled. Prints both side by side with ratios. Goal: medians of TTFT and ITL
within 10% of vLLM's, request throughput at least 0.9 of vLLM's (medians over repeats).

Run: .venv/bin/python benchmarks/latency_parity.py [--prompts 48] [--concurrency 4] [--output-len 32] [--repeats 3]
Writes benchmarks/results/latency_parity.json; exits 1 when the goal is missed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from harness import models
from harness.backends.openai_compat import OpenAICompatBackend
from harness.backends.vllm_server import ServerGroup, ServeSpec, VllmServer
from harness.bench import LevelResult, LoadLevel, Targets, run_levels
from harness.bench_prompts import LevelPrompts, random_prompts, read_prompts

from record import alternate, spread, write

VLLM_BENCH = """
import sys
from vllm.benchmarks.serve import add_cli_args, main
from vllm.utils.argparse_utils import FlexibleArgumentParser
parser = FlexibleArgumentParser()
add_cli_args(parser)
main(parser.parse_args(sys.argv[1:]))
"""

# (label, vLLM result key, harness result getter)
FIGURES = [
    ("TTFT median (ms)", "median_ttft_ms", lambda r: r.ttft_ms["p50"]),
    ("ITL median (ms)", "median_itl_ms", lambda r: r.itl_ms["p50"]),
    ("TPOT median (ms)", "median_tpot_ms", lambda r: r.tpot_ms["p50"]),
    ("E2E median (ms)", "median_e2el_ms", lambda r: r.e2e_ms["p50"]),
    ("TTFT p99 (ms)", "p99_ttft_ms", lambda r: r.ttft_ms["p99"]),
    ("request throughput (req/s)", "request_throughput", lambda r: r.request_throughput),
    ("output throughput (tok/s)", "output_throughput", lambda r: r.output_throughput),
]


def run_vllm_bench(url: str, served: str, tokenizer: str, prompts: Path, args: argparse.Namespace,
                   out: Path) -> dict:
    cmd = [sys.executable, "-c", VLLM_BENCH, "--backend", "openai", "--endpoint", "/v1/completions",
           "--base-url", url, "--model", served, "--tokenizer", tokenizer, "--dataset-name", "custom",
           "--dataset-path", str(prompts), "--skip-chat-template", "--disable-shuffle",
           "--custom-output-len", str(args.output_len), "--num-prompts", str(args.prompts),
           "--max-concurrency", str(args.concurrency), "--ignore-eos", "--num-warmups", str(args.warmup),
           "--percentile-metrics", "ttft,tpot,itl,e2el", "--disable-tqdm", "--save-result",
           "--result-dir", str(out.parent), "--result-filename", out.name]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct", help="embedded name or model directory")
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--input-words", type=int, default=48)
    parser.add_argument("--output-len", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    model = models.resolve(args.model, print)
    work = Path(tempfile.mkdtemp(prefix="parity-"))

    def fresh_prompts(repeat: int, side: int) -> Path:
        path = work / f"prompts-{repeat}-{side}.jsonl"
        prompts = random_prompts(args.prompts, args.input_words, args.output_len, 1 + 2 * repeat + side)
        path.write_text("".join(json.dumps({"prompt": r.prompt}) + "\n" for r in prompts))
        return path

    served = "parity"
    server = VllmServer(ServerGroup(model, served, ServeSpec(max_model_len=1024)), work / "logs")
    print(f"starting vLLM on {model} in {server.dtype()} (log {server.log_path})")
    server.start()
    try:
        server.wait_healthy(600)
        client = OpenAICompatBackend(f"{server.url}/v1", served, endpoint="completions", concurrency=args.concurrency,
                                     extra_body={"ignore_eos": True})

        def peer(repeat: int) -> dict:
            return run_vllm_bench(server.url, served, model, fresh_prompts(repeat, 0), args,
                                  work / f"vllm-{repeat}.json")

        def ours(repeat: int) -> LevelResult:
            requests = read_prompts(fresh_prompts(repeat, 1), args.output_len)
            # vLLM's bench warms up with its first prompt and measures it again, so one cached prompt on each side
            (level,) = run_levels(client, served, [LevelPrompts(requests[:1], requests)],
                                  [LoadLevel(args.concurrency)], Targets(), cost_per_hour=0)
            return level

        runs, order = alternate({"vllm bench": peer, "harness bench": ours}, args.repeats)
    finally:
        server.stop()

    table = Table(title=f"{args.prompts} prompts × {args.repeats} repeats, concurrency {args.concurrency}, "
                        f"{args.output_len} output tokens (median over repeats; fresh prompts per run)")
    for col in ("figure", "vLLM bench", "harness bench", "harness / vLLM"):
        table.add_column(col, justify="left" if col == "figure" else "right")
    figures = {}
    for label, key, getter in FIGURES:
        peer_values = [float(run[key]) for run in runs["vllm bench"]]
        our_values = [float(getter(r)) for r in runs["harness bench"]]
        figures[label] = {"vllm": spread(peer_values), "harness": spread(our_values),
                          "ratio": spread([o / p for o, p in zip(our_values, peer_values, strict=True)])}
        table.add_row(label, f"{figures[label]['vllm']['median']:.2f}", f"{figures[label]['harness']['median']:.2f}",
                      f"{figures[label]['ratio']['median']:.3f}")
    Console().print(table)
    failed = sum(r.errors for r in runs["harness bench"]) + sum(run.get("failed", 0) for run in runs["vllm bench"])
    print(f"failed requests: {failed}; files in {work}")
    ratio = {label: figures[label]["ratio"]["median"] for label in figures}
    met = (failed == 0 and all(abs(ratio[f] - 1) <= 0.10 for f in ("TTFT median (ms)", "ITL median (ms)"))
           and ratio["request throughput (req/s)"] >= 0.90)
    write("latency_parity", goal="TTFT and ITL medians within 10% of vLLM bench's, request throughput at least "
                                 "0.9 of it, no failed request (medians over repeats)", met=met,
          figures={**figures, "failed_requests": failed},
          settings={**vars(args), "model": args.model, "server_dtype": server.dtype(), "endpoint": "completions",
                    "ignore_eos": True, "prompts_per_run": "fresh (new seed per run and side)"}, order=order)


if __name__ == "__main__":
    main()
