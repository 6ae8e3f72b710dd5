"""`harness run SUITE --rehearse`: the flagship 8B-against-70B suite turned into what a 2-core CPU runs, the same
topology where it can, and the whole run through to its verdict (slow)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.backends.vllm_server import ServerGroup, ServeSpec, VllmOptions, VllmServer
from harness.config import load_suite
from harness.errors import HarnessError
from harness.plan import make_plan
from harness.rehearsal import BASE_STAND_IN, BASELINE_STAND_IN, FINETUNE_PROCESSES, rehearse

ROOT = Path(__file__).resolve().parents[1]
FLAGSHIP = ROOT / "suites" / "llama-8b-vs-70b.yaml"


def _variant(tmp_path: Path, change) -> Path:
    raw = yaml.safe_load(FLAGSHIP.read_text())
    change(raw)
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_each_model_gets_the_stand_in_of_its_role_and_the_topology_stays_where_a_cpu_allows():
    suite = load_suite(FLAGSHIP)
    done = rehearse(suite, None, 100)
    by_name = {c.name: c for c in done.suite.candidates}
    # The model the suite fine-tunes (its base and the fine-tune) → SmolLM2; the 70B baseline → Gemma.
    assert by_name["llama-8b"].model == by_name["llama-8b-ft"].model == BASE_STAND_IN
    assert by_name["llama-70b"].model == BASELINE_STAND_IN
    base, big = by_name["llama-8b"].options, by_name["llama-70b"].options
    assert isinstance(base, VllmOptions) and isinstance(big, VllmOptions)
    assert base.serve.replicas == 2 and base.serve.devices == [] and base.serve.dtype == "auto"
    assert big.serve.tensor_parallel_size == min(4, len(os.sched_getaffinity(0))) and big.serve.devices == []
    assert big.endpoint == "completions" and base.endpoint == "chat"  # Gemma's base model has no chat template
    tune = by_name["llama-8b-ft"].finetune
    assert tune is not None and tune.distributed.processes == FINETUNE_PROCESSES and tune.distributed.strategy == "ddp"
    assert tune.max_steps is not None and tune.limit is not None and tune.limit <= 64
    # The manifest's min_examples per task, unless --sample says otherwise; a smaller task stays whole.
    assert all(t.sample == 100 for t in done.suite.tasks)
    assert all(t.sample == 8 for t in rehearse(suite, 8, 100).suite.tasks)
    assert any("meta-llama/Llama-3.1-70B-Instruct → gemma-3-270m" in n for n in done.notes)
    assert any("tensor_parallel_size 4 →" in n for n in done.notes) == (len(os.sched_getaffinity(0)) < 4)
    # The suite itself is left as written.
    assert load_suite(FLAGSHIP).candidates[2].model == "meta-llama/Llama-3.1-70B-Instruct"


def test_a_given_adapter_cannot_be_rehearsed_and_a_hosted_baseline_becomes_a_server(tmp_path):
    def given_adapter(raw):
        raw["candidates"][1].pop("finetune")
        raw["candidates"][1]["adapter"] = str(tmp_path)
        raw["manifest"] = None

    with pytest.raises(HarnessError, match=r"candidates\.1 \(llama-8b-ft\)\.adapter: .*finetune"):
        rehearse(load_suite(_variant(tmp_path, given_adapter)), 8, None)

    def hosted(raw):
        raw["candidates"][2] = {"name": "llama-70b", "model": "meta-llama/Llama-3.1-70B-Instruct",
                                "backend": "openai", "url": "http://localhost:1/v1", "concurrency": 8}

    done = rehearse(load_suite(_variant(tmp_path, hosted)), 8, None)
    big = done.suite.candidates[2].options
    assert isinstance(big, VllmOptions) and big.concurrency == 8 and big.endpoint == "completions"
    assert any("backend openai → vllm" in n for n in done.notes)


def test_a_sample_below_min_examples_is_refused_for_a_real_run_and_said_for_a_rehearsal(tmp_path):
    def embedded(raw):  # the same suite on models this machine has, so that only the sample is wrong
        for cand, model in zip(raw["candidates"], [BASE_STAND_IN, BASE_STAND_IN, BASELINE_STAND_IN], strict=True):
            cand["model"] = model

    with pytest.raises(HarnessError, match=r"criteria\.0: banking77 has 8 test examples .* min_examples is 100"):
        make_plan(_variant(tmp_path, embedded), sample=8)
    plan = make_plan(FLAGSHIP, rehearse=True, sample=8)
    assert plan.rehearsal and plan.manifest is not None and plan.manifest.min_examples == 100
    assert any("below the manifest's min_examples" in n and "insufficient" in n for n in plan.notes)
    assert all(len(t.data.test) == 8 for t in plan.tasks)


def test_tensor_parallel_on_a_cpu_binds_each_rank_to_cores_of_its_own(tmp_path, monkeypatch):
    server = VllmServer(ServerGroup("m", "m", ServeSpec(tensor_parallel_size=2)), tmp_path)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert server.cpu_binding() == "0,1|2,3"
    if not _cuda():
        cmd = server.command()
        assert cmd[cmd.index("--distributed-executor-backend") + 1] == "mp"
        assert server.environment()["VLLM_CPU_OMP_THREADS_BIND"] == "0,1|2,3"
        single = VllmServer(ServerGroup("m", "m", ServeSpec()), tmp_path).command()
        assert single[single.index("--distributed-executor-backend") + 1] == "uni"
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    with pytest.raises(HarnessError, match="needs a core per rank"):
        server.cpu_binding()


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.slow
def test_the_flagship_suite_rehearsed_end_to_end_ends_with_its_verdict(tmp_path):
    """The real thing on this CPU: a 2-process torchrun fine-tune, two SmolLM2 replicas and a Gemma server with
    tensor parallel 2 on vLLM's CPU backend, the flagship's manifest, the verdict printed, exit 0."""
    results = tmp_path / "results"
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(FLAGSHIP), "--rehearse", "--sample", "6",
                           "--results", str(results), "--run-id", "r"], capture_output=True, text=True,
                          timeout=1800, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Manifest verdict" in done.stdout and "a rehearsal" in done.stdout
    run = results / "r"
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "complete" and record["rehearsal"]
    lineage = json.loads((Path(record["adapters"]["llama-8b-ft"]) / "lineage.json").read_text())
    ranks = lineage["distributed"]
    assert ranks["world_size"] == 2 and len(ranks["ranks"]) == 2
    assert all(r["optimizer_steps"] > 0 for r in ranks["ranks"])
    commands = [p.read_text().splitlines()[0] for p in (run / "logs").glob("vllm-*.log")]
    smol = [c for c in commands if BASE_STAND_IN in c]
    gemma = [c for c in commands if BASELINE_STAND_IN in c]
    assert len(smol) == 2 and len({re.search(r"--port (\d+)", c).group(1) for c in smol}) == 2  # two replicas
    assert len(gemma) == 1 and "--tensor-parallel-size 2" in gemma[0]
    # Six examples a task, the manifest asking 100: nothing can pass, the stand-ins' plain failures may fail.
    verdict = json.loads((run / "verdict.json").read_text())
    statuses = [c["status"] for c in verdict["criteria"]]
    assert len(statuses) >= 5 and "insufficient" in statuses and "pass" not in statuses and not verdict["passed"]
    assert "A rehearsal" in (run / "report.md").read_text()
