"""The teacher client sorts failures into verdicts, pending calls and run-level endpoint errors."""

from __future__ import annotations

import asyncio
import json

import httpx2 as httpx  # the HTTP library the openai SDK runs on
import pytest
from openai import AsyncOpenAI

from teachers.client import CallPending, EndpointError, ModelClient, RequestRejected

OK = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Answer: (B)", "reasoning_content": "hm"},
                   "finish_reason": "stop"}]}


def _mocked(handler) -> AsyncOpenAI:
    return AsyncOpenAI(base_url="http://teacher/v1", api_key="sk-secret-123456789", max_retries=0,
                       http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))


def _run(responses, monkeypatch, key: str = "sk-secret-123456789"):
    """Send one chat through a client whose replica answers with ``responses`` in turn; count requests."""
    monkeypatch.setenv("AVRT_UNIT_KEY", key)
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        status, body = responses[min(len(seen), len(responses)) - 1]
        if isinstance(body, dict):
            return httpx.Response(status, json=body)
        if isinstance(body, bytes):  # said to be JSON, whatever it is
            return httpx.Response(status, content=body, headers={"content-type": "application/json"})
        return httpx.Response(status, text=body, headers={"content-type": "text/html"})

    async def go():
        client = ModelClient(model="m", base_urls=["http://teacher/v1"], sampling={"temperature": 0.0},
                             api_key_env="AVRT_UNIT_KEY", retries=2, backoff_s=0.001)
        client._replicas[0].client = _mocked(handler)
        try:
            return await client.chat(lambda: [{"role": "user", "content": "hi"}])
        finally:
            await client.close()

    return asyncio.run(go()), seen


def test_an_answer_after_transient_failures(monkeypatch):
    result, seen = _run([(503, {"error": {"message": "busy"}}), (429, {}), (200, OK)], monkeypatch)
    assert (result.content, result.reasoning, result.finish_reason) == ("Answer: (B)", "hm", "stop")
    assert len(seen) == 3 and seen[0]["messages"][0]["content"] == "hi"


@pytest.mark.parametrize("status, body, error, words", [
    (401, {"error": {"message": "Incorrect API key provided: sk-secret-123456789"}}, EndpointError, "authentication failed"),
    (403, {"error": {"message": "forbidden"}}, EndpointError, "permission denied"),
    (404, {"error": {"message": "The model `m` does not exist."}}, EndpointError, "does not exist"),
    (200, "<html><body>Welcome to nginx</body></html>", EndpointError, "does not speak the OpenAI chat protocol"),
    (200, {"id": "x", "object": "list", "data": []}, EndpointError, "no 'choices[0].message'"),
    (200, b'{"choices": [{"message": ', EndpointError, "the answer is not JSON"),
    (200, b"<html>502 Bad Gateway</html>", EndpointError, "the answer is not JSON"),
    (400, {"error": {"message": "too many images"}}, RequestRejected, "HTTP 400: too many images"),
    (503, {"error": {"message": "down"}}, EndpointError, "every request failed"),  # every attempt, no success
])
def test_failures_are_classified_with_the_server_reason(monkeypatch, status, body, error, words):
    with pytest.raises(error) as caught:
        _run([(status, body)], monkeypatch)
    assert words in caught.value.reason
    assert "sk-secret-123456789" not in str(caught.value)
    if error is EndpointError:
        assert "http://teacher/v1" in caught.value.reason


def test_transport_failures_are_pending_when_the_endpoint_answers_others(monkeypatch):
    async def go():
        client = ModelClient(model="m", base_urls=["http://teacher/v1"], sampling={}, retries=1, backoff_s=0.001)
        client._replicas[0].client = _mocked(lambda r: httpx.Response(500, json={}))
        client._replicas[0].last_success = float("inf")  # another request was answered meanwhile
        try:
            await client.chat([{"role": "user", "content": "hi"}])
        finally:
            await client.close()

    with pytest.raises(CallPending, match="no answer after 2 attempts"):
        asyncio.run(go())


def test_a_refused_connection_is_named_as_such_not_as_a_timeout():
    """The aiohttp transport reports a refused connection as a connect timeout; the reason says what happened."""
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def go():
        client = ModelClient(model="m", base_urls=[f"http://127.0.0.1:{port}/v1"], sampling={}, retries=0,
                             timeout_s=30)
        try:
            await client.chat([{"role": "user", "content": "hi"}])
        finally:
            await client.close()

    with pytest.raises(EndpointError) as caught:
        asyncio.run(go())
    assert "connection failed" in caught.value.reason and "timed out" not in caught.value.reason
    assert f"127.0.0.1:{port}" in caught.value.url


def test_a_chat_uses_no_deprecated_sdk_path(monkeypatch):
    # the serialised body goes as ``content=`` where the SDK has it (``body=bytes`` warns there)
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result, _ = _run([(200, OK)], monkeypatch)
    assert result.content == "Answer: (B)"
    assert not [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]


def test_answers_that_are_json_but_not_a_chat_message_are_endpoint_errors(monkeypatch):
    for body in ({"choices": []}, {"choices": ["text"]}, {"choices": [{"message": "text"}]}):
        with pytest.raises(EndpointError, match="does not speak the OpenAI chat protocol"):
            _run([(200, body)], monkeypatch)
