"""Model calls, cached by content and safe against kill -9: a call whose answer is on disk is never
sent again.

An entry lives at ``ROOT/calls/<role>/<k[:2]>/<k>.json`` where ``k`` digests exactly what determines
the answer: the model name, the request text, the digests of the media sent with it and the sampling
parameters; never the server URL or the API key, so replicas and key rotation invalidate nothing.
Entries are written to a temporary file and renamed: a killed run leaves a whole entry or none.
Identical requests in flight at once in a process are sent once: the later ones wait for that
answer, as they would read it from the cache a moment later (samples repeating a clip and question).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from media.files import atomic_write_bytes, content_key
from teachers.client import ChatResult, Messages, ModelClient


class CallCache:
    """JSON entries under ``root/<namespace>/<k[:2]>/<k>.json``; counts hits and misses."""

    def __init__(self, root: str | Path):
        self.root = os.fspath(root)  # entries are addressed as strings: one per model call
        self.hits: Counter[str] = Counter()
        self.misses: Counter[str] = Counter()
        self.in_flight: dict[str, asyncio.Future[ChatResult]] = {}  # entry path -> its call, while it runs

    def path(self, namespace: str, key: str) -> str:
        return f"{self.root}/{namespace}/{key[:2]}/{key}.json"

    def get(self, namespace: str, key: str) -> dict[str, Any] | None:
        """The entry, or None (also for one torn by a machine crash)."""
        try:
            with open(self.path(namespace, key), "rb") as handle:
                value = json.loads(handle.read())
        except (FileNotFoundError, ValueError):  # ValueError: a torn entry (bad JSON or UTF-8)
            self.misses[namespace] += 1
            return None
        self.hits[namespace] += 1
        return value

    def put(self, namespace: str, key: str, value: dict[str, Any]) -> None:
        atomic_write_bytes(self.path(namespace, key), json.dumps(value, ensure_ascii=False).encode("utf-8"))

    def counts(self) -> dict[str, dict[str, int]]:
        names = sorted(set(self.hits) | set(self.misses))
        return {n: {"hits": self.hits[n], "misses": self.misses[n]} for n in names}


async def cached_chat(cache: CallCache, client: ModelClient, role: str, key_parts: dict[str, Any],
                      messages: Messages | Callable[[], Messages],
                      extra_body: dict[str, Any] | None = None) -> tuple[ChatResult, bool]:
    """``(result, from_cache)``: the cached answer to this request if any, else one request to
    ``client`` (``messages`` may be a callable, built only once a slot is held), stored. ``extra_body``
    (further request fields, e.g. a ``response_format``) is part of the key."""
    extra = {"extra_body": extra_body} if extra_body else {}
    key = content_key(role=role, model=client.model, sampling=client.sampling, **key_parts, **extra)
    namespace = f"calls/{role}"
    cached = cache.get(namespace, key)  # one small file read: cheaper than a thread hop
    if cached is not None:
        return ChatResult(cached["content"], cached["reasoning"], cached.get("finish_reason"), cached.get("raw", "")), True
    path = cache.path(namespace, key)
    running = cache.in_flight.get(path)
    if running is not None:  # the same request is out already: share its answer (or its failure)
        return await asyncio.shield(running), True
    call = cache.in_flight[path] = asyncio.get_running_loop().create_future()
    call.add_done_callback(lambda done: done.cancelled() or done.exception())  # a failure nobody shared is not "unretrieved"
    try:
        result = await (client.chat(messages, extra_body) if extra_body else client.chat(messages))
        cache.put(namespace, key, result.to_dict())
        call.set_result(result)
        return result, False
    except BaseException as err:
        if isinstance(err, asyncio.CancelledError):
            call.cancel()
        else:
            call.set_exception(err)
        raise
    finally:
        del cache.in_flight[path]
