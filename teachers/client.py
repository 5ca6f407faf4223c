"""An async client for one model behind OpenAI-compatible servers (vLLM, transformers serve, ...).

Public surface (also used outside the pipeline)::

    client = ModelClient.from_endpoint(endpoint_config)        # or ModelClient(model=..., base_urls=[...], ...)
    result = await client.chat(messages)                       # -> ChatResult(content, reasoning, finish_reason, raw)
    await client.close()

``chat`` spreads requests over the replicas in ``base_urls`` (least in flight first) and never has
more than ``max_in_flight`` requests in flight per replica: this semaphore is the pipeline's only
concurrency bound (``flows.execution`` shares one client per endpoint across every shard of a
process). ``messages`` may be a zero-argument callable, called once a slot is held, so a large
payload (base64 frames) exists only while it can be sent.

Failures are classified, because only some of them say anything about the sample:

* ``RequestRejected``: the server answered that *this request* is bad (400, 413, 422, ...). Final.
* ``CallPending``: timeouts, connection errors, 429 and 5xx, still failing after ``retries``
  retries with exponential backoff and jitter. Not a verdict: the caller retries later.
* ``EndpointError``: the endpoint cannot serve anything (401/403, unknown model or path (404), an
  answer that is not OpenAI chat JSON, or every request failing for the whole retry window of a
  call). The run should stop; ``url`` and ``reason`` say where and why.

All derive from ``ModelCallError``. The API key is read from the environment variable the config
names and never appears in a reason.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from teachers.reasoning import split_reasoning

TRANSIENT_STATUS = {408, 409, 425, 429}  # and every 5xx
ENDPOINT_STATUS = {401: "authentication failed", 403: "permission denied", 404: "unknown model or path"}
Messages = list[dict[str, Any]]


class ModelCallError(Exception):
    """A call that did not give an answer; ``reason`` is human-readable (never contains the API key)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class RequestRejected(ModelCallError):
    """The server refused this request itself (a 4xx other than auth/404/429): a final verdict."""


class CallPending(ModelCallError):
    """Transport failures outlasted the retries; the request may succeed later."""


class EndpointError(ModelCallError):
    """The endpoint cannot serve any request; ``url`` is the replica that said so."""

    def __init__(self, url: str, reason: str):
        super().__init__(f"{url}: {reason}")
        self.url = url


@dataclass
class ChatResult:
    content: str  # the text after any reasoning (the answer part)
    reasoning: str  # reasoning, wherever the server or the model put it
    finish_reason: str | None
    raw: str = ""  # the message content exactly as returned

    def to_dict(self) -> dict[str, Any]:
        return {"content": self.content, "reasoning": self.reasoning, "finish_reason": self.finish_reason, "raw": self.raw}


class _Transient(Exception):
    """One attempt failed in a way a later attempt may not."""


@dataclass
class _Replica:
    url: str
    client: httpx.AsyncClient
    limit: asyncio.Semaphore
    in_flight: int = 0
    last_success: float = float("-inf")  # monotonic time of the last answered request


@dataclass
class ModelClient:
    """Chat completions against one model; create it inside the event loop that uses it."""

    model: str
    base_urls: list[str]
    sampling: dict[str, Any]
    api_key_env: str | None = None
    timeout_s: float = 600.0
    max_in_flight: int = 16
    retries: int = 4
    backoff_s: float = 1.0
    _replicas: list[_Replica] = field(default_factory=list, init=False)
    _key: str = field(default="", init=False, repr=False)

    def __post_init__(self) -> None:
        self._key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        # Plain httpx, not the openai SDK: the same HTTP for a fraction of its CPU per request.
        headers = {"Authorization": f"Bearer {self._key or 'EMPTY'}", "Content-Type": "application/json"}
        timeout = httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 30.0))
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=max(16, self.max_in_flight))
        for url in self.base_urls:
            client = httpx.AsyncClient(base_url=url.rstrip("/") + "/", headers=headers, timeout=timeout, limits=limits)
            self._replicas.append(_Replica(url, client, asyncio.Semaphore(max(1, self.max_in_flight))))

    @classmethod
    def from_endpoint(cls, endpoint, max_in_flight: int | None = None, backoff_s: float = 1.0) -> "ModelClient":
        """A client for an ``EndpointConfig`` (``max_in_flight`` overrides its per-replica bound)."""
        return cls(model=endpoint.model, base_urls=list(endpoint.base_url), sampling=endpoint.sampling(),
                   api_key_env=endpoint.api_key_env, timeout_s=endpoint.timeout_s,
                   max_in_flight=max_in_flight or endpoint.max_in_flight, retries=endpoint.retries,
                   backoff_s=backoff_s)

    def _pick(self) -> _Replica:
        return min(self._replicas, key=lambda r: (r.in_flight, random.random()))

    async def chat(self, messages: Messages | Callable[[], Messages]) -> ChatResult:
        """One chat completion; raises a ``ModelCallError`` subclass (see the module doc)."""
        standard = {k: v for k, v in self.sampling.items() if k in ("temperature", "top_p", "max_tokens", "seed", "stop")}
        extra = {k: v for k, v in self.sampling.items() if k not in standard}
        started = time.monotonic()
        last_error, replica = "no attempt made", self._replicas[0]
        for attempt in range(1, self.retries + 2):
            replica = self._pick()
            replica.in_flight += 1
            try:
                async with replica.limit:
                    body = messages() if callable(messages) else messages
                    payload = json.dumps({"model": self.model, "messages": body, **standard, **extra}).encode()
                    del body
                    response = await replica.client.post("chat/completions", content=payload)
                    del payload
                result = self._result(replica.url, response)
                replica.last_success = time.monotonic()
                return result
            except httpx.TimeoutException:
                last_error = f"timed out after {self.timeout_s:g} s"
            except httpx.TransportError as err:
                last_error = f"connection failed: {self._scrub(str(err) or type(err).__name__)[:160]}"
            except _Transient as err:
                last_error = str(err)
            finally:
                replica.in_flight -= 1
            if attempt <= self.retries:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1) * (0.5 + random.random()))
        if all(r.last_success < started for r in self._replicas):
            urls = ", ".join(r.url for r in self._replicas)
            raise EndpointError(urls, f"every request failed for {time.monotonic() - started:.0f} s "
                                      f"({self.retries + 1} attempts; last: {last_error})")
        raise CallPending(f"{self.model}: no answer after {self.retries + 1} attempts ({last_error})")

    def _result(self, url: str, response: httpx.Response) -> ChatResult:
        """A ChatResult, or the exception the response's status and body call for (see the module doc)."""
        status = response.status_code
        if status >= 400:
            said = f"HTTP {status}: {self._server_message(response)}"
            if status in ENDPOINT_STATUS:
                raise EndpointError(url, f"{ENDPOINT_STATUS[status]} ({said}) for model {self.model!r}")
            if status in TRANSIENT_STATUS or status >= 500:
                raise _Transient(said)
            raise RequestRejected(f"{self.model}: request rejected ({said})")
        try:
            data = response.json()
        except ValueError:
            data = None
        choices = data.get("choices") if isinstance(data, dict) else None
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        message = choice.get("message")
        if not isinstance(message, dict):
            raise EndpointError(url, "does not speak the OpenAI chat protocol (no 'choices' in the answer: "
                                     f"{self._scrub(response.text)[:120]!r})")
        reasoning, content = split_reasoning(message)
        raw = message.get("content")
        return ChatResult(content=content, reasoning=reasoning, finish_reason=choice.get("finish_reason"),
                          raw=raw if isinstance(raw, str) else content)

    def _server_message(self, response: httpx.Response) -> str:
        """The server's own reason: ``error.message`` of an OpenAI error body, else the text."""
        try:
            data = response.json()
            error = data.get("error") if isinstance(data, dict) else None
            text = (error.get("message") if isinstance(error, dict) else error) or data.get("detail") or data.get("message")
        except (ValueError, AttributeError):
            text = None
        return self._scrub(str(text or response.text or response.reason_phrase))[:200]

    def _scrub(self, text: str) -> str:
        """Remove the API key (and anything shaped like one) from a server's message."""
        if self._key:
            text = text.replace(self._key, "***")
        return re.sub(r"\b(sk|key|hf)[-_][A-Za-z0-9*_\-]{6,}", "***", text)

    async def close(self) -> None:
        for replica in self._replicas:
            await replica.client.aclose()
