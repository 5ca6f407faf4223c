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
        return httpx.Response(status, text=body, headers={"content-type": "text/html"})

    async def go():
        client = ModelClient(model="m", base_urls=["http://teacher/v1"], sampling={"temperature": 0.0},
                             api_key_env="AVRT_UNIT_KEY", retries=2, backoff_s=0.001)
        client._replicas[0].make_client = lambda: _mocked(handler)
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
    (200, {"id": "x", "object": "list", "data": []}, EndpointError, "no 'choices'"),
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
        client._replicas[0].make_client = lambda: _mocked(lambda r: httpx.Response(500, json={}))
        client._replicas[0].last_success = float("inf")  # another request was answered meanwhile
        try:
            await client.chat([{"role": "user", "content": "hi"}])
        finally:
            await client.close()

    with pytest.raises(CallPending, match="no answer after 2 attempts"):
        asyncio.run(go())


def test_requests_spread_over_lanes_of_at_most_lane_size(monkeypatch):
    """At 40 in flight on one replica, no official client (connection pool) carries more than
    LANE_SIZE requests at once, and the replica's bound still holds."""
    from teachers import client as client_module

    async def go():
        release = asyncio.Event()
        peaks: list[int] = []
        client = ModelClient(model="m", base_urls=["http://teacher/v1"], sampling={}, max_in_flight=40)
        replica = client._replicas[0]

        async def handler(request: httpx.Request) -> httpx.Response:
            peaks.append(max(lane.in_flight for lane in replica.lanes))
            await release.wait()
            return httpx.Response(200, json=OK)

        replica.make_client = lambda: AsyncOpenAI(base_url="http://teacher/v1", api_key="x", max_retries=0,
                                                  http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))
        tasks = [asyncio.create_task(client.chat([{"role": "user", "content": str(i)}])) for i in range(50)]
        while sum(lane.in_flight for lane in replica.lanes) < 40:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        in_flight = [lane.in_flight for lane in replica.lanes]
        release.set()
        results = await asyncio.gather(*tasks)
        await client.close()
        return in_flight, peaks, results

    in_flight, peaks, results = asyncio.run(go())
    assert sum(in_flight) == 40 and max(in_flight) <= client_module.LANE_SIZE
    assert len(in_flight) == -(-40 // client_module.LANE_SIZE)
    assert max(peaks) <= client_module.LANE_SIZE and len(results) == 50
