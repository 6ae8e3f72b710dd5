import time

import pytest

from harness.backends.base import Request
from harness.backends.openai_compat import OpenAICompatBackend
from harness.errors import HarnessError
from tests.fake_openai_server import FakeServer


def _requests(n, stop=()):
    return [Request(f"r{i}", [{"role": "user", "content": f"q{i}"}], f"q{i}", 8, stop=stop) for i in range(n)]


def _backend(server, **kw):
    return OpenAICompatBackend(server.url, "fake", backoff_s=0.01, **kw)


def test_streams_text_and_timings():
    with FakeServer(delay_s=0.01) as server:
        out = list(_backend(server).generate(_requests(3), "c", "t"))
    assert sorted(c.example_id for c in out) == ["r0", "r1", "r2"]
    for c in out:
        assert c.text == "Hello there!" and c.ok and c.attempts == 1
        assert c.prompt_tokens == 7 and c.completion_tokens == 3
        assert len(c.itl_s) == 2 and 0 < c.ttft_s <= c.e2e_s
    # Requests run concurrently, so they reach the server in any order.
    assert sorted(r["messages"][0]["content"] for r in server.requests) == ["q0", "q1", "q2"]
    assert all(r["stream"] is True and r["model"] == "fake" for r in server.requests)


def test_completions_endpoint_sends_the_plain_prompt():
    with FakeServer() as server:
        out = list(_backend(server, endpoint="completions").generate(_requests(1), "c", "t"))
    assert out[0].text == "Hello there!"
    assert server.requests[0]["path"] == "/v1/completions" and server.requests[0]["prompt"] == "q0"


def test_stop_strings_are_sent_and_applied():
    with FakeServer(pieces=("yes", "\nand more")) as server:
        out = list(_backend(server).generate(_requests(1, stop=("\n",)), "c", "t"))
    assert out[0].text == "yes" and server.requests[0]["stop"] == ["\n"]


def test_retries_503_with_backoff_then_succeeds():
    with FakeServer(faults=[503, 429]) as server:
        out = list(_backend(server, max_retries=3).generate(_requests(1), "c", "t"))
    assert out[0].ok and out[0].attempts == 3 and len(server.requests) == 3


def test_persistent_failure_is_recorded_not_dropped():
    with FakeServer(faults=[500] * 10) as server:
        out = list(_backend(server, max_retries=2).generate(_requests(1), "c", "t"))
    assert not out[0].ok and "failed after 3 attempts" in out[0].error and "HTTP 500" in out[0].error
    assert len(server.requests) == 3


def test_client_errors_are_not_retried():
    with FakeServer(faults=[400]) as server:
        out = list(_backend(server).generate(_requests(1), "c", "t"))
    assert "HTTP 400" in out[0].error and len(server.requests) == 1


def test_concurrency_limit_is_respected():
    with FakeServer(delay_s=0.05) as server:
        out = list(_backend(server, concurrency=2).generate(_requests(6), "c", "t"))
    assert len(out) == 6 and server.max_in_flight == 2


def test_api_key_comes_from_the_named_environment_variable(monkeypatch):
    monkeypatch.setenv("FAKE_KEY", "sekrit")
    with FakeServer() as server:
        list(_backend(server, api_key_env="FAKE_KEY").generate(_requests(1), "c", "t"))
    assert server.headers[0]["Authorization"] == "Bearer sekrit"
    monkeypatch.delenv("FAKE_KEY")
    with pytest.raises(HarnessError, match="FAKE_KEY"):
        OpenAICompatBackend("http://127.0.0.1:9/v1", "m", api_key_env="FAKE_KEY")


def test_unreachable_server_names_the_url():
    with pytest.raises(HarnessError, match=r"cannot reach http://127.0.0.1:9/v1"):
        OpenAICompatBackend("http://127.0.0.1:9/v1", "m")


def test_replicas_share_the_requests_and_retries_move_to_the_next():
    with FakeServer() as a, FakeServer() as b:
        out = list(OpenAICompatBackend([a.url, b.url], "fake", backoff_s=0.01).generate(_requests(6), "c", "t"))
        assert all(c.ok for c in out) and len(a.requests) == len(b.requests) == 3
    with FakeServer(faults=[503] * 100) as sick, FakeServer() as healthy:
        backend = OpenAICompatBackend([sick.url, healthy.url], "fake", backoff_s=0.01, max_retries=1)
        out = list(backend.generate(_requests(4), "c", "t"))
    assert all(c.ok for c in out) and len(healthy.requests) == 4
    assert sorted(c.attempts for c in out) == [1, 1, 2, 2]


def test_a_retried_request_is_timed_from_its_first_attempt():
    """A server whose first answer to each prompt hangs past the client's timeout, the retry answering at once:
    the user waited through the timed-out attempt and the backoff, so the latencies do too (from the first
    attempt's start), not only the fast last attempt's. The gaps between tokens are the answering attempt's."""
    seen: set[str] = set()

    def reply(body):
        prompt = body["messages"][0]["content"]
        if prompt not in seen:
            seen.add(prompt)
            time.sleep(1.0)
        return "yes"

    with FakeServer(reply=reply) as server:
        backend = OpenAICompatBackend(server.url, "fake", timeout_s=0.3, max_retries=2, backoff_s=0.1)
        started = time.perf_counter()
        out = list(backend.generate(_requests(3), "c", "t"))
        wall = time.perf_counter() - started
    for c in out:
        assert c.ok and c.attempts == 2 and c.text == "yes"
        assert 0.4 <= c.ttft_s <= c.e2e_s <= wall  # the 0.3 s timeout and the 0.1 s backoff at the least
        assert c.itl_s == []
    with FakeServer(faults=[503]) as server:
        (once,) = OpenAICompatBackend(server.url, "fake", backoff_s=0.2).generate(_requests(1), "c", "t")
    assert once.ok and once.attempts == 2 and once.e2e_s >= 0.2
