"""The OpenAI-compatible HTTP comparer against a real server on 127.0.0.1 started inside each test.

The server is ``tests/llmjudge_server.py`` (``vllm serve`` is not installed in CI): it
scripts replies and failures, or serves the real SmolLM2-135M with transformers.
"""

from __future__ import annotations

import socket

import pytest
from llmjudge_server import OpenAICompatServer, Reply, model_responder

from autojudge.core.compare.llm import (
    ChatRequest,
    ComparerBackendError,
    ComparerSettings,
    LLMEquivalenceChecker,
    LocalChatComparer,
    OpenAIChatComparer,
    ReplyCache,
    Verdict,
    build_messages,
)

Q = "What is the capital of France?"


def comparer_for(server: OpenAICompatServer, **kw) -> OpenAIChatComparer:
    comparer = OpenAIChatComparer(server.base_url, server.model, **kw)
    comparer.sleeps = []
    comparer.sleep = comparer.sleeps.append  # record backoff delays instead of waiting
    return comparer


def request(a: str = "Paris", b: str = "Lyon", **kw) -> ChatRequest:
    return ChatRequest.make(build_messages(Q, a, b), **kw)


def scripted(*replies):
    """A responder returning ``replies`` in turn, then repeating the last one."""
    it = iter(replies)
    last = [None]

    def respond(body):
        last[0] = next(it, last[0])
        return last[0]

    return respond


def test_request_payload_and_reply():
    with OpenAICompatServer(lambda body: "A: Paris\nB: Lyon\nSame: No") as server:
        comparer = comparer_for(server)
        assert (
            comparer.complete([request(), request(max_tokens=9, temperature=0.5, seed=3)])
            == ["A: Paris\nB: Lyon\nSame: No"] * 2
        )
        greedy, sampled = sorted(server.requests, key=lambda b: b["max_tokens"], reverse=True)
        assert greedy == {
            "model": "test-judge",
            "messages": build_messages(Q, "Paris", "Lyon"),
            "max_tokens": 64,
            "temperature": 0.0,
            "n": 1,
        }
        assert (sampled["max_tokens"], sampled["temperature"], sampled["seed"]) == (9, 0.5, 3)
        assert "Authorization" not in server.headers[0]
        assert comparer.sleeps == []


def test_checker_over_http_with_cache(tmp_path):
    def respond(body):
        text = body["messages"][-1]["content"]
        return (
            "A: Paris\nB: Paris\nSame: Yes"  # restated from the responses, as the vote rules require
            if "Response B:\nThe capital is Paris." in text or "Response A:\nThe capital is Paris." in text
            else "Same: No"
        )

    with OpenAICompatServer(respond) as server:
        cache = ReplyCache(tmp_path / "c.sqlite3")
        checker = LLMEquivalenceChecker(comparer_for(server), cache=cache)
        items = [(Q, "Paris", "The capital is Paris."), (Q, "Paris", "Lyon")]
        assert checker.equivalent_many(items) == [True, False]
        assert server.count == 4
        again = LLMEquivalenceChecker(comparer_for(server), cache=ReplyCache(tmp_path / "c.sqlite3"))
        assert again.equivalent_many(items) == [True, False]
        assert server.count == 4  # every reply came from the cache


def test_api_key_is_read_from_the_named_environment_variable(monkeypatch):
    with OpenAICompatServer(lambda body: "Same: Yes", api_key="sk-test-123") as server:
        monkeypatch.setenv("JUDGE_KEY", "sk-test-123")
        assert comparer_for(server, api_key_env="JUDGE_KEY").complete([request()]) == ["Same: Yes"]
        assert server.headers[-1]["Authorization"] == "Bearer sk-test-123"
        # a wrong key is a 401: not retried, reported at once
        monkeypatch.setenv("JUDGE_KEY", "wrong")
        comparer = comparer_for(server, api_key_env="JUDGE_KEY", max_retries=3)
        with pytest.raises(ComparerBackendError, match=r"HTTP 401, not retried"):
            comparer.complete([request()])
        assert comparer.sleeps == []
        # an unset variable fails before any request
        monkeypatch.delenv("JUDGE_KEY")
        n = server.count
        with pytest.raises(ComparerBackendError, match=r"\$JUDGE_KEY, which is unset"):
            comparer_for(server, api_key_env="JUDGE_KEY").complete([request()])
        assert server.count == n


def test_unknown_model_is_not_retried():
    with OpenAICompatServer(lambda body: "Same: Yes", model="served") as server:
        comparer = OpenAIChatComparer(server.base_url, "other-model", max_retries=3)
        comparer.sleep = lambda s: pytest.fail("retried a 404")
        with pytest.raises(ComparerBackendError, match=r"HTTP 404.*other-model"):
            comparer.complete([request()])


def test_5xx_is_retried_with_exponential_backoff_then_succeeds():
    fail = Reply(status=500, body=b'{"error": "overloaded"}')
    with OpenAICompatServer(scripted(fail, Reply(status=503, body=b"busy"), fail, "Same: Yes")) as server:
        comparer = comparer_for(server, max_retries=4, backoff=1.0, max_backoff=30.0)
        assert comparer.complete([request()]) == ["Same: Yes"]
        assert server.count == 4
        # base 1, 2, 4 s with jitter in [50%, 100%]
        assert len(comparer.sleeps) == 3
        for delay, base in zip(comparer.sleeps, (1.0, 2.0, 4.0), strict=True):
            assert base / 2 <= delay <= base


def test_persistent_5xx_raises_after_the_retries_and_is_never_equivalent(tmp_path):
    with OpenAICompatServer(lambda body: Reply(status=502, body=b"bad gateway")) as server:
        comparer = comparer_for(server, max_retries=2, backoff=0.5)
        cache = ReplyCache(tmp_path / "c.sqlite3")
        checker = LLMEquivalenceChecker(comparer, ComparerSettings(both_orders=False), cache=cache)
        with pytest.raises(ComparerBackendError) as err:
            checker.equivalent(Q, "Paris", "Paris, the capital")
        msg = str(err.value)
        assert server.base_url in msg and "failed 3 times" in msg and "HTTP 502" in msg
        assert server.count == 3 and len(comparer.sleeps) == 2
        assert len(cache) == 0  # failures are never cached
        assert checker.stats.verdicts[Verdict.YES] == 0


def test_429_honours_retry_after():
    with OpenAICompatServer(
        scripted(Reply(status=429, body=b"slow down", headers={"Retry-After": "2"}), "Same: No")
    ) as server:
        comparer = comparer_for(server, max_retries=1, backoff=10.0)
        assert comparer.complete([request()]) == ["Same: No"]
        assert comparer.sleeps == [2.0]


def test_timeouts_are_retried_then_reported():
    with OpenAICompatServer(lambda body: Reply(content="Same: Yes", delay=1.5)) as server:
        comparer = comparer_for(server, timeout=0.3, max_retries=1)
        with pytest.raises(ComparerBackendError, match="timed out after 0.3 s"):
            comparer.complete([request()])
        assert server.count == 2


@pytest.mark.parametrize(
    "bad, why",
    [
        (Reply(body=b"<html>not json</html>"), "not JSON"),
        (Reply(body=b'{"choices": []}'), "no choices"),
        (Reply(body=b'{"object": "chat.completion"}'), "no choices"),
        (Reply(content=None), "content is NoneType"),
    ],
)
def test_malformed_replies_are_retried_then_reported(bad, why):
    with OpenAICompatServer(lambda body: bad) as server:
        comparer = comparer_for(server, max_retries=2)
        with pytest.raises(ComparerBackendError, match=f"malformed reply \\({why}"):
            comparer.complete([request()])
        assert server.count == 3
    with OpenAICompatServer(scripted(bad, "Same: Yes")) as server:
        assert comparer_for(server, max_retries=2).complete([request()]) == ["Same: Yes"]


def test_connection_refused_is_retried_then_reported():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    comparer = OpenAIChatComparer(f"http://127.0.0.1:{port}/v1", "m", max_retries=2, backoff=0.01)
    with pytest.raises(ComparerBackendError, match="connection failed"):
        comparer.complete([request()])


def test_a_failed_request_in_a_batch_keeps_the_others(tmp_path):
    def respond(body):
        return (
            Reply(status=500, body=b"no")
            if "Response A:\nLyon" in body["messages"][-1]["content"]
            else "Same: No"
        )

    with OpenAICompatServer(respond) as server:
        cache = ReplyCache(tmp_path / "c.sqlite3")
        checker = LLMEquivalenceChecker(comparer_for(server, max_retries=1), cache=cache)
        with pytest.raises(ComparerBackendError, match="1 of 2 judge requests failed"):
            checker.equivalent(Q, "Paris", "Lyon")
        assert len(cache) == 1  # the (Paris, Lyon) order arrived and is kept


@pytest.mark.integration
def test_real_model_served_over_http_matches_the_local_backend(tmp_path):
    """SmolLM2-135M behind the HTTP server gives the same replies as the in-process local backend."""
    import torch

    from autojudge.core.models import load_model

    torch.manual_seed(0)
    lm = load_model("smollm2-135m-instruct", dtype="float32")
    items = [(Q, "Paris", "The capital of France is Paris."), (Q, "Paris", "Lyon")]
    with OpenAICompatServer(model_responder(lm.model, lm.tokenizer), model="smollm2") as server:
        # generous timeout: the CI machine may be shared; short replies keep it quick
        settings = ComparerSettings(max_tokens=24)
        comparer = comparer_for(server, concurrency=2, timeout=900, max_retries=0)
        http = LLMEquivalenceChecker(comparer, settings, cache=ReplyCache(tmp_path / "h.sqlite3"))
        via_http = http.check_many(items)
        assert server.count == 4
        local = LLMEquivalenceChecker(
            LocalChatComparer(
                "smollm2-135m-instruct", dtype="float32", batch_size=1, model=lm.model, tokenizer=lm.tokenizer
            ),
            settings,
        )
        in_process = local.check_many(items)
        assert [r.replies for r in via_http] == [r.replies for r in in_process]
        assert all(isinstance(t, str) and t for r in via_http for t in r.replies)
        assert [r.verdict for r in via_http] == [r.verdict for r in in_process]
        # cached: asking again sends nothing
        assert [r.verdict for r in http.check_many(items)] == [
            r.verdict for r in via_http
        ] and server.count == 4
