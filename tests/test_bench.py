"""`harness bench`: the figures by hand, every request on a prompt no earlier request sent (a prefix cache
would answer a repeat at a fraction of a real TTFT), and a fine-tune or adapter candidate benched with its
adapter, never its base under its name."""

import json
from itertools import pairwise

import numpy as np
import pytest

from harness.backends.base import Completion
from harness.backends.openai_compat import OpenAICompatBackend
from harness.backends.vllm_server import VllmServer
from harness.bench import LoadLevel, Targets, run_levels, summarise
from harness.bench_prompts import distinct_prompts, draw_prompts, poisson_arrivals, random_prompts, read_prompts
from harness.errors import HarnessError
from harness.records import Request
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
    prompts = draw_prompts(random_prompts(2 * (2 + 12), input_words=5, max_new_tokens=4, seed=0), levels=2,
                           warmup=2, requests=12).levels
    with FakeServer(delay_s=0.1) as server:
        backend = OpenAICompatBackend(server.url, "fake")
        seen = []

        def record(level):
            seen.append((level.concurrency, server.max_in_flight))
            server.max_in_flight = 0

        results = run_levels(backend, "c", prompts, [LoadLevel(1), LoadLevel(3)], targets=Targets(), cost_per_hour=0,
                             on_level=record)
    assert [r.requests for r in results] == [12, 12]
    assert seen == [(1, 1), (3, 3)]
    assert len(server.requests) == 2 * (12 + 2)
    assert results[1].request_throughput > results[0].request_throughput


def _chat_prompts(n: int) -> list[Request]:
    """Prompts as a suite's task renders them: one shared system message (a prefix the cache may reuse), then
    each example's own question."""
    system = {"role": "system", "content": "Answer with one label: card, transfer, refund."}
    return [Request(f"ex{i}", [system, {"role": "user", "content": f"Message {i}: where is my card?"}],
                    f"{system['content']}\nMessage {i}: where is my card?", 4) for i in range(n)]


def test_no_request_repeats_a_prompt_an_earlier_one_sent():
    # 10 distinct prompts (and one repeat in the source) for 3 levels of 2 warm-up + 6 measured requests: the
    # source runs out, so later passes must still send prompts no earlier request sent.
    source = _chat_prompts(10)
    source.insert(5, source[2])
    draw = draw_prompts(source, levels=3, warmup=2, requests=6)
    assert (draw.distinct, draw.passes) == (10, 3)
    with FakeServer() as server:
        backend = OpenAICompatBackend(server.url, "fake")
        results = run_levels(backend, "c", draw.levels, [LoadLevel(1), LoadLevel(2), LoadLevel(2)],
                             targets=Targets(), cost_per_hour=0)
    sent = [json.dumps(body["messages"]) for body in server.requests]
    assert len(sent) == 3 * (2 + 6) and len(set(sent)) == len(sent), "a prompt was sent twice"
    ids = [i for r in results for i in (*r.warmup_prompts, *r.prompts)]
    assert len(ids) == 24 and len(set(ids)) == 24, "latency.json would list a prompt at two levels"
    assert [len(r.warmup_prompts) for r in results] == [2, 2, 2] and all(r.requests == 6 for r in results)
    # The first pass goes as the task has it; later ones lead with their mark, the rest of the prompt unchanged.
    dealt = [p for level in draw.levels for p in (*level.warmup, *level.measured)]
    assert dealt[:10] == distinct_prompts(source)
    assert dealt[10].messages[0]["content"] == "[pass 2] " + source[0].messages[0]["content"]
    assert dealt[20].prompt == "[pass 3] " + source[0].prompt and dealt[20].messages[1:] == source[0].messages[1:]
    assert len({p.prompt for p in dealt}) == 24


def test_prompts_go_unmarked_while_distinct_ones_last_and_marked_for_a_server_run_elsewhere():
    source = _chat_prompts(12)
    draw = draw_prompts(source, levels=2, warmup=1, requests=5)
    assert draw.passes == 1 and draw.record()["marking"] is None
    assert [p for level in draw.levels for p in (*level.warmup, *level.measured)] == source
    # A server the bench did not start may hold the plain prompts from earlier: every one carries the bench's tag.
    tagged = draw_prompts(source, levels=2, warmup=1, requests=5, tag="ab12")
    assert all(p.messages[0]["content"].startswith("[ab12 pass 1] ") and p.prompt.startswith("[ab12 pass 1] ")
               for level in tagged.levels for p in (*level.warmup, *level.measured))
    assert "every prompt carries this bench's mark" in tagged.record()["cache"]


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


FINETUNE = {"task": "keywords", "max_steps": 1, "eval_steps": 1, "validation_fraction": 0, "batch_size": 4}


def _served_suite(tmp_path, talking_model, **candidate):
    task = classification_task(tmp_path / "task")
    return write_yaml(tmp_path / "s.yaml", {"name": "b", "allow_overlap": True, "tasks": [str(task)], "candidates": [
        {"name": "tuned", "backend": "vllm", "model": str(talking_model), **candidate}]})


@pytest.fixture
def fake_vllm(monkeypatch):
    """The vLLM servers a bench starts, answered by a scripted server: what each would be started with is kept
    (its command line), and every request reaches the scripted server."""
    commands: list[list[str]] = []
    with FakeServer() as server:
        port = int(server.url.removesuffix("/v1").rsplit(":", 1)[1])
        monkeypatch.setattr("harness.backends.vllm_server._free_port", lambda: port)
        monkeypatch.setattr(VllmServer, "start", lambda self: commands.append(self.command()))
        monkeypatch.setattr(VllmServer, "alive", lambda self: True)
        yield server, commands


def test_a_finetune_not_trained_yet_is_refused_in_one_line(tmp_path, talking_model, monkeypatch, capsys, fake_vllm):
    from tests.test_cli import run_cli

    server, _ = fake_vllm
    monkeypatch.setenv("HARNESS_ADAPTERS", str(tmp_path / "adapters"))  # empty: nothing trained
    suite = _served_suite(tmp_path, talking_model, finetune=FINETUNE)
    code, err = run_cli(monkeypatch, capsys, "bench", str(suite), "--candidate", "tuned",
                        "--results", str(tmp_path / "res"))
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 2 and "Traceback" not in err
    assert f"{suite}: candidates.0.finetune: candidate tuned is fine-tuned" in line
    assert line.endswith(f"harness finetune {suite} --candidate tuned")
    assert server.requests == [] and not list(tmp_path.glob("res/*-bench-*")), "nothing was benched"


def test_a_finetune_is_benched_with_the_adapter_trained_for_it(tmp_path, talking_model, monkeypatch, capsys,
                                                              fake_vllm):
    from tests.test_cli import run_cli

    server, commands = fake_vllm
    suite = _served_suite(tmp_path, talking_model, finetune=FINETUNE)
    res = tmp_path / "res"
    store = tmp_path / "adapters"
    monkeypatch.setenv("HARNESS_ADAPTERS", str(store))
    assert run_cli(monkeypatch, capsys, "finetune", str(suite))[0] == 0
    (adapter,) = store.iterdir()
    code, err = run_cli(monkeypatch, capsys, "bench", str(suite), "--candidate", "tuned", "--concurrency", "1,2",
                        "--requests", "3", "--warmup", "1", "--results", str(res))
    assert code == 0, err
    # The server loads the trained adapter under the candidate's name, and every request, warm-up included,
    # names the adapter: the base is never what is measured.
    (command,) = commands
    assert command[command.index("--lora-modules") + 1] == f"tuned={adapter}"
    assert len(server.requests) == 2 * (1 + 3) and {body["model"] for body in server.requests} == {"tuned"}
    (bench_dir,) = res.glob("*-bench-tuned")
    latency = json.loads((bench_dir / "latency.json").read_text())
    assert latency["adapter"] == str(adapter) and latency["prompt_draw"]["each_prompt_sent_once"]
    assert f"with adapter {adapter}" in (bench_dir / "report.md").read_text()


def test_an_adapter_candidate_is_benched_with_its_adapter(tmp_path, talking_model, lora_adapter, monkeypatch,
                                                          capsys, fake_vllm):
    from tests.test_cli import run_cli

    server, commands = fake_vllm
    suite = _served_suite(tmp_path, talking_model, adapter=str(lora_adapter))
    code, err = run_cli(monkeypatch, capsys, "bench", str(suite), "--candidate", "tuned", "--concurrency", "1",
                        "--requests", "2", "--warmup", "1", "--results", str(tmp_path / "res"))
    assert code == 0, err
    (command,) = commands
    assert command[command.index("--lora-modules") + 1] == f"tuned={lora_adapter.resolve()}"
    assert {body["model"] for body in server.requests} == {"tuned"}


def test_an_adapter_on_a_server_run_elsewhere_is_refused(tmp_path, talking_model, lora_adapter, monkeypatch, capsys):
    from tests.test_cli import run_cli

    with FakeServer() as server:
        suite = _served_suite(tmp_path, talking_model, adapter=str(lora_adapter), backend="openai", url=server.url)
        code, err = run_cli(monkeypatch, capsys, "bench", str(suite), "--candidate", "tuned",
                            "--results", str(tmp_path / "res"))
    assert code == 2 and "candidates.0.adapter: backend openai sends requests" in err
    assert server.requests == [], "nothing was benched"


@pytest.mark.slow
@pytest.mark.vllm
def test_bench_against_a_real_vllm_server(tmp_path, talking_model, monkeypatch, capsys):
    from tests.conftest import require_vllm
    from tests.test_cli import run_cli
    from tests.tiny_model import build_tiny_model

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
    # 12 test prompts for 3 levels of 4 warm-up + 16 requests: still no prompt sent twice (later passes marked).
    sent = [i for lv in latency["levels"] for i in (*lv["warmup_prompts"], *lv["prompts"])]
    assert len(sent) == 60 == len(set(sent)) and latency["prompt_draw"]["passes"] == 5
    for level in latency["levels"]:
        assert level["requests"] == 16 and level["errors"] == 0
        assert level["goodput_rps"] == pytest.approx(level["request_throughput"])
        for family in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
            assert 0 < level[family]["p50"] <= level[family]["p99"]
        # ignore_eos: every request produced exactly the asked 12 tokens.
        assert level["output_throughput"] == pytest.approx(12 * level["request_throughput"])
    assert (bench_dir / "latency.png").stat().st_size > 10_000
    assert "| c=4, 50 req/s |" in (bench_dir / "report.md").read_text()
