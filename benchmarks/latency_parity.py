"""Latency parity with vLLM's own serving benchmark.

Starts one vLLM server (the embedded SmolLM2-135M-Instruct by default), writes one prompts file, then
runs, alternately, `vllm.benchmarks.serve` (the peer) and `harness bench`'s load loop against the same
server with the same prompts, output length (end of sequence ignored) and concurrency, and prints both
side by side with ratios. Goal: medians of TTFT and ITL within 10% of vLLM's, request throughput at
least 0.9 of vLLM's.

Run: .venv/bin/python benchmarks/latency_parity.py [--prompts 48] [--concurrency 4] [--output-len 32]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from harness import models
from harness.backends.openai_compat import OpenAICompatBackend
from harness.backends.vllm_server import ServerGroup, ServeSpec, VllmServer
from harness.bench import LoadLevel, Targets, random_prompts, read_prompts, run_levels

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
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    model = models.resolve(args.model, print)
    work = Path(tempfile.mkdtemp(prefix="parity-"))
    prompts_file = work / "prompts.jsonl"
    prompts_file.write_text("".join(json.dumps({"prompt": r.prompt}) + "\n"
                                    for r in random_prompts(args.prompts, args.input_words, args.output_len, 0)))
    served = "parity"
    server = VllmServer(ServerGroup(model, served, ServeSpec(max_model_len=1024, dtype="bfloat16")), work / "logs")
    print(f"starting vLLM on {model} (log {server.log_path})")
    server.start()
    try:
        server.wait_healthy(600)
        client = OpenAICompatBackend(f"{server.url}/v1", served, endpoint="completions", concurrency=args.concurrency,
                                     extra_body={"ignore_eos": True})
        requests = read_prompts(prompts_file, args.output_len)
        peer_runs, ours_runs = [], []
        for i in range(args.repeats):
            peer_runs.append(run_vllm_bench(server.url, served, model, prompts_file, args, work / f"vllm-{i}.json"))
            ours_runs += run_levels(client, served, requests, [LoadLevel(args.concurrency)], args.warmup, Targets(),
                                    cost_per_hour=0)
    finally:
        server.stop()

    table = Table(title=f"{args.prompts} prompts × {args.repeats} repeats, concurrency {args.concurrency}, "
                        f"{args.output_len} output tokens (median over repeats)")
    for col in ("figure", "vLLM bench", "harness bench", "harness / vLLM"):
        table.add_column(col, justify="left" if col == "figure" else "right")
    for label, key, getter in FIGURES:
        peer = float(np.median([run[key] for run in peer_runs]))
        ours = float(np.median([getter(r) for r in ours_runs]))
        table.add_row(label, f"{peer:.2f}", f"{ours:.2f}", f"{ours / peer:.3f}")
    Console().print(table)
    failed = sum(r.errors for r in ours_runs) + sum(run.get("failed", 0) for run in peer_runs)
    print(f"failed requests: {failed}; files in {work}")


if __name__ == "__main__":
    main()
