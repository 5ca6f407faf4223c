"""An async client for one model behind OpenAI-compatible servers (vLLM, transformers serve, ...).

It spreads requests over the replicas in ``base_url`` (least in flight first), bounds requests in
flight per replica, retries timeouts, connection errors, 429 and 5xx with exponential backoff and
jitter, and fails fast on other errors. The API key is read from the environment variable the
config names and is never logged.
"""

from __future__ import annotations

import asyncio
import os
import random
from dataclasses import dataclass, field
from typing import Any

import openai
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion

from teachers.reasoning import split_reasoning

RETRYABLE = (openai.APITimeoutError, openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)


class ModelCallError(Exception):
    """A call that failed for good; ``reason`` is human-readable (never contains the API key)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class ChatResult:
    content: str  # the text after any reasoning (the answer part)
    reasoning: str  # reasoning, wherever the server or the model put it
    finish_reason: str | None
    raw: str = ""  # the message content exactly as returned

    def to_dict(self) -> dict[str, Any]:
        return {"content": self.content, "reasoning": self.reasoning, "finish_reason": self.finish_reason, "raw": self.raw}


@dataclass
class _Replica:
    url: str
    client: AsyncOpenAI
    limit: asyncio.Semaphore
    in_flight: int = 0


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

    def __post_init__(self) -> None:
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        for url in self.base_urls:
            client = AsyncOpenAI(base_url=url, api_key=key or "EMPTY", timeout=self.timeout_s, max_retries=0)
            self._replicas.append(_Replica(url, client, asyncio.Semaphore(max(1, self.max_in_flight))))

    @classmethod
    def from_endpoint(cls, endpoint, max_in_flight: int | None = None, backoff_s: float = 1.0) -> "ModelClient":
        return cls(model=endpoint.model, base_urls=list(endpoint.base_url), sampling=endpoint.sampling(),
                   api_key_env=endpoint.api_key_env, timeout_s=endpoint.timeout_s,
                   max_in_flight=max_in_flight or endpoint.max_in_flight, retries=endpoint.retries,
                   backoff_s=backoff_s)

    def _pick(self) -> _Replica:
        return min(self._replicas, key=lambda r: (r.in_flight, random.random()))

    async def chat(self, messages: list[dict[str, Any]]) -> ChatResult:
        standard = {k: v for k, v in self.sampling.items() if k in ("temperature", "top_p", "max_tokens", "seed", "stop")}
        extra = {k: v for k, v in self.sampling.items() if k not in standard}
        last_error = "no attempt made"
        for attempt in range(1, self.retries + 2):
            replica = self._pick()
            replica.in_flight += 1
            try:
                async with replica.limit:
                    # The low-level post of the official client: same HTTP, timeout and error
                    # handling as chat.completions.create, without its per-call recursive walk of
                    # the (large, already valid) message payload, which cost ~6 ms per request.
                    response = await replica.client.post(
                        "/chat/completions", cast_to=ChatCompletion,
                        body={"model": self.model, "messages": messages, **standard, **extra})
                choice = response.choices[0]
                reasoning, content = split_reasoning(choice.message)
                return ChatResult(content=content, reasoning=reasoning, finish_reason=choice.finish_reason,
                                  raw=choice.message.content or "")
            except RETRYABLE as err:
                last_error = _describe(err)
            except openai.APIStatusError as err:
                raise ModelCallError(f"{self.model}: {_describe(err)}") from None
            except (IndexError, AttributeError, TypeError, ValueError) as err:
                raise ModelCallError(f"{self.model}: malformed response ({type(err).__name__})") from None
            finally:
                replica.in_flight -= 1
            if attempt <= self.retries:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1) * (0.5 + random.random()))
        raise ModelCallError(f"{self.model}: gave up after {self.retries + 1} attempts ({last_error})")

    async def close(self) -> None:
        for replica in self._replicas:
            await replica.client.close()


def _describe(err: Exception) -> str:
    if isinstance(err, openai.APITimeoutError):
        return "timed out"
    if isinstance(err, openai.APIConnectionError):
        return "connection failed"
    status = getattr(err, "status_code", None)
    return f"HTTP {status}" if status else type(err).__name__
