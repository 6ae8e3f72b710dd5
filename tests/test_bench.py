import json
from itertools import pairwise

import numpy as np
import pytest

from harness.backends.base import Completion
from harness.backends.openai_compat import OpenAICompatBackend
from harness.bench import LoadLevel, Targets, poisson_arrivals, random_prompts, read_prompts, run_levels, summarise
from harness.errors import HarnessError
from tests.conftest import classification_task, write_yaml
from tests.fake_openai_server import FakeServer


def _completion(ttft, e2e, tokens, itl, error=None):
    return Completion("x", "c", "t", "text", completion_tokens=tokens, ttft_s=ttft, e2e_s=e2e, itl_s=itl, error=error)


def test_summary_by_hand():
    completions = [_completion(0.1, 1.0, 10, [0.1] * 9), _completion(0.2, 2.0, 19, [0.1] * 18),
                   _completion(0.3, 0.9, 4, [0.2] * 3), _completion(None, None, 0, [], error="HTTP 500")]
    r = summarise(LoadLevel(4), completions, duration_s=2.0, targets=Targets(ttft_ms=250, tpot_ms=150),
                  cost_per_hour=3.6)
    assert r.requests == 3 and r.errors == 1 and r.first_error == "HTTP 500"
    assert r.request_throughput == pytest.approx(1.5)
    assert r.output_throughput == pytest.approx(33 / 2.0)
    assert r.ttft_ms["p50"] == pytest.approx(200)
    assert r.ttft_ms["p99"] == pytest.approx(np.percentile([100, 200, 300], 99))
    tpot = [900 / 9, 1800 / 18, 600 / 3]
    assert r.tpot_ms["p50"] == pytest.approx(np.percentile(tpot, 50))
    assert r.itl_ms["p90"] == pytest.approx(np.percentile([100] * 27 + [200] * 3, 90))
    assert r.e2e_ms["mean"] == pytest.approx(1300)
    # Goodput: TTFT <= 250 and TPOT <= 150 holds for the first two requests only.
    assert r.goodput_rps == pytest.approx(2 / 2.0)
    # $3.60 an hour for 2 s is $0.002 for 3 requests: $0.6667 per 1,000.
    assert r.cost_per_1k_requests == pytest.approx(0.002 / 3 * 1000)


def test_targets_parse_and_reject():
    assert Targets.parse("ttft=500,tpot_ms=50") == Targets(ttft_ms=500, tpot_ms=50)
    with pytest.raises(HarnessError, match="unknown target 'itl'"):
        Targets.parse("itl=3")
    with pytest.raises(HarnessError, match="NAME=MILLISECONDS"):
        Targets.parse("ttft=fast")


def test_poisson_arrivals_have_the_asked_rate():
    arrivals = poisson_arrivals(4000, rate=8.0, seed=0)
    assert arrivals[0] == 0 and all(b >= a for a, b in pairwise(arrivals))
    assert len(arrivals) / arrivals[-1] == pytest.approx(8.0, rel=0.05)


def test_levels_set_the_concurrency_and_skip_warmup():
    prompts = random_prompts(12, input_words=5, max_new_tokens=4, seed=0)
    with FakeServer(delay_s=0.02) as server:
        backend = OpenAICompatBackend(server.url, "fake")
        seen = []

        def record(level):
            seen.append((level.concurrency, server.max_in_flight))
            server.max_in_flight = 0

        results = run_levels(backend, "c", prompts, [LoadLevel(1), LoadLevel(3)], warmup=2, targets=Targets(),
                             cost_per_hour=0, on_level=record)
    assert [r.requests for r in results] == [12, 12]
    assert seen == [(1, 1), (3, 3)]
    assert len(server.requests) == 2 * (12 + 2)
    assert results[1].request_throughput > results[0].request_throughput


def test_prompt_files(tmp_path):
    good = tmp_path / "p.jsonl"
    good.write_text('{"prompt": "hello"}\n\n{"prompt": "there"}\n')
    assert [r.prompt for r in read_prompts(good, 8)] == ["hello", "there"]
    (tmp_path / "bad.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(HarnessError, match="line 1 has no `prompt`"):
        read_prompts(tmp_path / "bad.jsonl", 8)


def test_bench_refuses_an_in_process_candidate(tmp_path, talking_model, monkeypatch, capsys):
    from tests.test_cli import run_cli

    task = classification_task(tmp_path / "task")
    suite = write_yaml(tmp_path / "s.yaml", {"name": "b", "tasks": [str(task)],
                                             "candidates": [{"name": "local", "model": str(talking_model)}]})
    code, err = run_cli(monkeypatch, capsys, "bench", str(suite), "--candidate", "local")
    assert code == 2 and "bench needs a served backend (openai, vllm)" in err
    code, err = run_cli(monkeypatch, capsys, "bench", str(suite), "--candidate", "nobody")
    assert code == 2 and "no candidate named 'nobody'" in err


@pytest.mark.slow
@pytest.mark.vllm
def test_bench_against_a_real_vllm_server(tmp_path, talking_model, monkeypatch, capsys):
    from harness.models import build_tiny_model
    from tests.conftest import require_vllm
    from tests.test_cli import run_cli

    require_vllm()
    task = classification_task(tmp_path / "task")
    # Latency only: a random model (head_dim 32) whose 12 tokens are all text, where the test model's
    # answer would end in special tokens that stream as empty chunks.
    random_model = build_tiny_model(tmp_path / "random")
    suite = write_yaml(tmp_path / "s.yaml", {"name": "b", "tasks": [str(task)], "candidates": [
        {"name": "tiny", "backend": "vllm", "model": str(random_model), "endpoint": "completions",
         "cost_per_hour": 2.0,
         "serve": {"dtype": "float32", "max_model_len": 512, "cpu_kv_cache_gib": 1}}]})
    code, _ = run_cli(monkeypatch, capsys, "bench", str(suite), "--candidate", "tiny", "--concurrency", "1,4",
                      "--rate", "50", "--requests", "16", "--output-len", "12", "--slo", "e2e=60000",
                      "--results", str(tmp_path / "res"))
    assert code == 0
    (bench_dir,) = (tmp_path / "res").iterdir()
    latency = json.loads((bench_dir / "latency.json").read_text())
    assert [(lv["concurrency"], lv["rate"]) for lv in latency["levels"]] == [(1, None), (4, None), (4, 50.0)]
    for level in latency["levels"]:
        assert level["requests"] == 16 and level["errors"] == 0
        assert level["goodput_rps"] == pytest.approx(level["request_throughput"])
        for family in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
            assert 0 < level[family]["p50"] <= level[family]["p99"]
        # ignore_eos: every request produced exactly the asked 12 tokens.
        assert level["output_throughput"] == pytest.approx(12 * level["request_throughput"])
    assert (bench_dir / "latency.png").stat().st_size > 10_000
    assert "| c=4, 50 req/s |" in (bench_dir / "report.md").read_text()
