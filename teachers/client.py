"""An async client for one model behind OpenAI-compatible servers (vLLM, transformers serve, ...).

Public surface (also used outside the pipeline)::

    client = ModelClient.from_endpoint(endpoint_config)        # or ModelClient(model=..., base_urls=[...], ...)
    result = await client.chat(messages)                       # -> ChatResult(content, reasoning, finish_reason, raw)
    await client.close()

``chat`` spreads requests over the replicas in ``base_urls`` (least in flight first, a replica whose
last attempt failed for transport last: a retry goes to the others) and never has
more than ``max_in_flight`` requests in flight per replica: this semaphore is the pipeline's only
concurrency bound (``flows.execution`` shares one client per endpoint across every shard of a
process). ``messages`` may be a zero-argument callable, called once a slot is held, so a large
payload (base64 frames) exists only while it can be sent.

The official client runs on its aiohttp transport: with many requests in flight its default httpx
pool scans every connection on each request, which made CPU per request grow with ``max_in_flight``.

Failures are classified, because only some of them say anything about the sample:

* ``RequestRejected``: the server answered that *this request* is bad (400, 413, 422, ...). Final.
* ``CallPending``: timeouts, connection errors, 429 and 5xx, still failing after ``retries``
  retries with exponential backoff and jitter. Not a verdict: the caller retries later.
* ``EndpointError``: the endpoint cannot serve anything (401/403, unknown model or path (404), an
  answer that is not OpenAI chat JSON (HTML, a body that is not JSON, JSON without a message), or every request failing for the whole retry window of a
  call). The run should stop; ``url`` and ``reason`` say where and why.

All derive from ``ModelCallError``. The API key is read from the environment variable the config
names (or given as ``api_key``) and never appears in a reason.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import openai
from openai import AsyncOpenAI

from teachers.reasoning import split_reasoning
from teachers.requests import dumps_body

TRANSIENT = (openai.APITimeoutError, openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)
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
    completion_tokens: int | None = None  # tokens generated, when the server reports its usage

    def to_dict(self) -> dict[str, Any]:
        return {"content": self.content, "reasoning": self.reasoning, "finish_reason": self.finish_reason, "raw": self.raw}


# the official client takes a serialised body as ``content`` (``body=bytes`` is deprecated there);
# SDKs before that take it as ``body``
_BODY_ARG = "content" if "content" in inspect.signature(AsyncOpenAI.post).parameters else "body"


@lru_cache(maxsize=1)
def _platform() -> Any:
    from openai._base_client import get_platform

    return get_platform()


def _http_client() -> Any:
    """The official client's aiohttp transport (``openai[aiohttp]``), or None (its default httpx
    transport) where aiohttp is missing."""
    try:
        return openai.DefaultAioHttpClient()
    except (RuntimeError, AttributeError):  # aiohttp not installed; an SDK older than the transport
        return None


def _connection_failure(err: BaseException) -> BaseException | None:
    """The OS-level connection error under ``err``, if any (the aiohttp transport reports a refused
    connection as a connect *timeout*)."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and not isinstance(seen, TimeoutError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


@dataclass
class _Replica:
    url: str
    client: AsyncOpenAI
    limit: asyncio.Semaphore
    in_flight: int = 0
    last_success: float = float("-inf")  # monotonic time of the last answered request
    failing: bool = False  # its last attempt failed for transport: tried after the others


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
    api_key: str | None = field(default=None, repr=False)  # the key itself (a rollout server's secret), else api_key_env's
    _replicas: list[_Replica] = field(default_factory=list, init=False)
    _key: str = field(default="", init=False, repr=False)

    def __post_init__(self) -> None:
        self._key = self.api_key or (os.environ.get(self.api_key_env, "") if self.api_key_env else "")
        for url in self.base_urls:
            self._replicas.append(_Replica(url, self._new_client(url), asyncio.Semaphore(max(1, self.max_in_flight))))

    def _new_client(self, url: str) -> AsyncOpenAI:
        client = AsyncOpenAI(base_url=url, api_key=self._key or "EMPTY", timeout=self.timeout_s, max_retries=0,
                             http_client=_http_client())
        if getattr(client, "_platform", False) is None:
            # the SDK otherwise probes the OS in a worker thread for every request sent before the
            # first answer: hundreds of thread hops at start-up
            client._platform = _platform()
        return client

    @classmethod
    def from_endpoint(cls, endpoint, max_in_flight: int | None = None) -> "ModelClient":
        """A client for an ``EndpointConfig`` (``max_in_flight`` overrides its per-replica bound)."""
        return cls(model=endpoint.model, base_urls=list(endpoint.base_url), sampling=endpoint.sampling(),
                   api_key_env=endpoint.api_key_env, timeout_s=endpoint.timeout_s,
                   max_in_flight=max_in_flight or endpoint.max_in_flight, retries=endpoint.retries,
                   backoff_s=endpoint.backoff_s)

    def _pick(self) -> _Replica:
        return min(self._replicas, key=lambda r: (r.failing, r.in_flight, random.random()))

    async def chat(self, messages: Messages | Callable[[], Messages], extra_body: dict | None = None) -> ChatResult:
        """One chat completion (``extra_body``: further request fields for this call only); raises a
        ``ModelCallError`` subclass (see the module doc)."""
        standard = {k: v for k, v in self.sampling.items() if k in ("temperature", "top_p", "max_tokens", "seed", "stop")}
        extra = {k: v for k, v in self.sampling.items() if k not in standard}

        def body() -> dict[str, Any]:
            return {"model": self.model, "messages": messages() if callable(messages) else messages, **standard, **extra,
                    **(extra_body or {})}

        url, response = await self._send(body)
        return self._result(url, response)

    async def request(self, body: dict[str, Any]) -> dict[str, Any]:
        """One chat completion from a whole request body (``model`` added), as the server's JSON answer
        (every choice, logprobs, token ids); same retries and errors as ``chat``."""
        url, response = await self._send(lambda: {"model": self.model, **body})
        if not isinstance(response, dict) or not isinstance(response.get("choices"), list):
            raise EndpointError(url, "does not speak the OpenAI chat protocol (no 'choices' in the answer)")
        return response

    async def _send(self, make_body: Callable[[], dict[str, Any]]) -> tuple[str, Any]:
        """POST ``/chat/completions`` with retries over the replicas; ``(replica url, parsed JSON)``."""
        started = time.monotonic()
        last_error, replica = "no attempt made", self._replicas[0]
        for attempt in range(1, self.retries + 2):
            replica = self._pick()
            replica.in_flight += 1
            try:
                async with replica.limit:
                    # The low-level post of the official client: same HTTP, timeout and error
                    # handling as chat.completions.create, without its per-call recursive walk of
                    # the (large, already valid) message payload, which cost ~6 ms per request;
                    # the body is serialised once, media parts as they were encoded. The answer
                    # comes back as parsed JSON (``cast_to=object``): ``_result`` reads the few
                    # fields it needs, without building the pydantic ``ChatCompletion`` tree.
                    payload = dumps_body(make_body())
                    try:
                        response = await replica.client.post("/chat/completions", cast_to=object, **{_BODY_ARG: payload})
                    except json.JSONDecodeError as err:  # a JSON content type whose body is not JSON
                        raise EndpointError(replica.url, "does not speak the OpenAI chat protocol (the answer is not "
                                                         f"JSON: {self._scrub(err.doc)[:120]!r})") from None
                    del payload
                replica.last_success, replica.failing = time.monotonic(), False
                return replica.url, response
            except TRANSIENT as err:
                last_error, replica.failing = self._describe(err), True
            except openai.APIStatusError as err:
                if err.status_code in ENDPOINT_STATUS:
                    raise EndpointError(replica.url, f"{ENDPOINT_STATUS[err.status_code]} ({self._describe(err)}) "
                                                     f"for model {self.model!r}") from None
                if err.status_code in TRANSIENT_STATUS:
                    last_error, replica.failing = self._describe(err), True
                else:
                    raise RequestRejected(f"{self.model}: request rejected ({self._describe(err)})") from None
            except openai.APIResponseValidationError as err:
                raise EndpointError(replica.url, f"does not speak the OpenAI chat protocol ({self._describe(err)})") from None
            finally:
                replica.in_flight -= 1
            if attempt <= self.retries:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1) * (0.5 + random.random()))
        if all(r.last_success < started for r in self._replicas):
            urls = ", ".join(r.url for r in self._replicas)
            raise EndpointError(urls, f"every request failed for {time.monotonic() - started:.0f} s "
                                      f"({self.retries + 1} attempts; last: {last_error})")
        raise CallPending(f"{self.model}: no answer after {self.retries + 1} attempts ({last_error})")

    def _result(self, url: str, response: Any) -> ChatResult:
        """A ChatResult from the answer's JSON, or EndpointError when it is not OpenAI chat JSON."""
        choices = response.get("choices") if isinstance(response, dict) else None
        first = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        message = first.get("message")
        if not isinstance(message, dict):
            shown = response if isinstance(response, str) else type(response).__name__
            raise EndpointError(url, f"does not speak the OpenAI chat protocol (no 'choices[0].message' in the answer: "
                                     f"{self._scrub(str(shown))[:120]!r})")
        reasoning, content = split_reasoning(message)
        raw = message.get("content")
        tokens = (response.get("usage") or {}).get("completion_tokens")
        return ChatResult(content=content, reasoning=reasoning, finish_reason=first.get("finish_reason"),
                          raw=raw if isinstance(raw, str) else "",
                          completion_tokens=tokens if isinstance(tokens, int) else None)

    def _describe(self, err: Exception) -> str:
        refused = _connection_failure(err)
        if isinstance(err, openai.APITimeoutError) and refused is None:
            return f"timed out after {self.timeout_s:g} s"
        if isinstance(err, openai.APIConnectionError):  # timeouts included
            cause = refused or err.__cause__ or err.__context__
            return f"connection failed: {self._scrub(str(cause or err))[:160]}"
        status = getattr(err, "status_code", None)
        body = getattr(err, "body", None)
        said = body.get("message") if isinstance(body, dict) else None
        message = str(said or getattr(err, "message", "") or err)
        message = self._scrub(re.sub(r"^Error code: \d+ - ", "", message))[:200]
        return f"HTTP {status}: {message}" if status else f"{type(err).__name__}: {message}"

    def _scrub(self, text: str) -> str:
        """Remove the API key (and anything shaped like one) from a server's message."""
        if self._key:
            text = text.replace(self._key, "***")
        return re.sub(r"\b(sk|key|hf)[-_][A-Za-z0-9*_\-]{6,}", "***", text)

    async def close(self) -> None:
        for replica in self._replicas:
            await replica.client.close()
