"""A small scripted OpenAI-compatible chat server for the pipeline's logic tests and benchmarks.

It answers ``POST /v1/chat/completions`` with texts chosen per model by a handler or a queue, can
inject latency (fixed, or seeded lognormal per request), slow replies (client timeouts) and HTTP
errors, require an API key on every route (as avrt's rollout guard does), and counts requests per
model and the most in flight at once. It keeps every request's (model, start, end) in ``spans``, also served at ``GET /v1/_spans`` for a
benchmark in another process::

    with ScriptedServer() as server:
        server.set_handler("vision", lambda request: Reply("Answer: (B)"))
        server.queue("audio", Reply(status=500), Reply("Answer: (C)"))
        client = openai.OpenAI(base_url=server.url, api_key="x")
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    content: str = ""
    reasoning: str | None = None
    reasoning_field: str = "reasoning_content"  # vLLM >= 0.10 uses "reasoning"
    status: int = 200
    delay: float = 0.0
    finish_reason: str = "stop"
    # the whole answer, sent as it is: a dict as JSON (vLLM-specific fields), a str as it is (a malformed answer)
    body: dict[str, Any] | str | None = None


Handler = Callable[[dict[str, Any]], "Reply | str"]


class _HTTPServer(ThreadingHTTPServer):
    request_queue_size = 1024  # the listen backlog: hundreds of concurrent clients connect at once
    daemon_threads = True


def default_handler(request: dict[str, Any]) -> Reply:
    return Reply("Answer: (A)")


class ScriptedServer:
    def __init__(self, handler: Handler = default_handler, latency: float | Callable[[dict[str, Any]], float] = 0.0,
                 api_key: str | None = None):
        self.default = handler
        self.latency = latency  # seconds, or a function of the request
        # when set, every request (GET or POST, any route) without "Authorization: Bearer <api_key>" gets 401,
        # as a rollout server behind avrt's guard answers
        self.api_key = api_key
        self.in_flight: Counter[str] = Counter()  # requests being answered now, per model
        self.peak: Counter[str] = Counter()  # the most in flight at once, per model
        self.handlers: dict[str, Handler] = {}
        self.queues: dict[str, deque[Reply]] = defaultdict(deque)
        self.counts: Counter[str] = Counter()
        self.requests: list[dict[str, Any]] = []
        self.completed: list[tuple[float, dict[str, Any]]] = []  # (monotonic time, request) of answered calls
        self.spans: list[tuple[str, float, float]] = []  # (model, start, end) monotonic times of every POST
        self.other_posts: list[tuple[str, dict[str, Any]]] = []  # (path, body) of POSTs to other routes
        self.routes: dict[str, Callable[[dict[str, Any]], Reply]] = {}  # answers of other routes (else 200 {})
        self._lock = threading.Lock()
        self._httpd = _HTTPServer(("127.0.0.1", 0), self._make_handler())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def set_handler(self, model: str, handler: Handler) -> None:
        self.handlers[model] = handler

    def set_route(self, path: str, handler: Callable[[dict[str, Any]], Reply]) -> None:
        """Answer GET or POST ``path`` (a route other than chat completions) with ``handler(body)``."""
        self.routes[path] = handler

    def _route(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any] | str] | None:
        handler = self.routes.get(path.split("?")[0])
        if handler is None:
            return None
        reply = handler(body)
        time.sleep(reply.delay)
        return reply.status, reply.body if reply.body is not None else {}

    def queue(self, model: str, *replies: Reply | str) -> None:
        self.queues[model].extend(Reply(r) if isinstance(r, str) else r for r in replies)

    def reset_counts(self) -> None:
        with self._lock:
            self.counts.clear()
            self.peak.clear()
            self.requests.clear()
            self.completed.clear()
            self.spans.clear()

    def _reply_for(self, request: dict[str, Any]) -> Reply:
        model = request.get("model", "")
        with self._lock:
            self.counts[model] += 1
            self.requests.append(request)
            queued = self.queues[model].popleft() if self.queues[model] else None
        reply = queued or self.handlers.get(model, self.default)(request)
        return Reply(reply) if isinstance(reply, str) else reply

    def _make_handler(self):
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # as real servers (uvicorn) do: no 40 ms delayed-ACK stalls

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, body: dict[str, Any] | str) -> None:
                data = (body if isinstance(body, str) else json.dumps(body)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _refused(self) -> bool:
                """Answer 401 (and count it) unless the request carries the key, when there is one."""
                if not server.api_key or self.headers.get("Authorization") == f"Bearer {server.api_key}":
                    return False
                with server._lock:
                    server.counts["unauthorized"] += 1
                self._send(401, {"error": {"message": "Incorrect API key provided", "code": 401}})
                return True

            def do_GET(self) -> None:
                if self._refused():
                    return
                if (routed := server._route(self.path, {})) is not None:
                    self._send(*routed)
                elif self.path.rstrip("/").endswith("/_spans"):  # for benchmarks in another process
                    with server._lock:
                        spans = list(server.spans)
                    self._send(200, {"spans": spans})
                elif self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in server.handlers]})
                else:
                    self._send(200, {"status": "ok"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                request = json.loads(self.rfile.read(length) or b"{}")
                if self._refused():
                    return
                if not self.path.rstrip("/").endswith("/chat/completions"):  # vLLM's dev routes, say
                    with server._lock:
                        server.other_posts.append((self.path, request))
                    self._send(*(server._route(self.path, request) or (200, {})))
                    return
                model = request.get("model", "")
                with server._lock:
                    server.in_flight[model] += 1
                    server.peak[model] = max(server.peak[model], server.in_flight[model])
                start = time.monotonic()
                try:
                    self._answer(request)
                finally:
                    with server._lock:
                        server.in_flight[model] -= 1
                        server.spans.append((model, start, time.monotonic()))

            def _answer(self, request: dict[str, Any]) -> None:
                reply = server._reply_for(request)
                latency = server.latency(request) if callable(server.latency) else server.latency
                if latency or reply.delay:
                    time.sleep(latency + reply.delay)
                if reply.status != 200:
                    self._send(reply.status, {"error": {"message": f"scripted {reply.status}", "code": reply.status}})
                    return
                with server._lock:
                    server.completed.append((time.monotonic(), request))
                if reply.body is not None:
                    self._send(200, reply.body)
                    return
                message: dict[str, Any] = {"role": "assistant", "content": reply.content}
                if reply.reasoning is not None:
                    message[reply.reasoning_field] = reply.reasoning
                self._send(200, {
                    "id": f"chatcmpl-{server.counts[request.get('model', '')]}", "object": "chat.completion",
                    "created": int(time.time()), "model": request.get("model", ""),
                    "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": len(reply.content.split()), "total_tokens": 1},
                })

        return _Handler

    def start(self) -> "ScriptedServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> "ScriptedServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def rollout_answer(*completions: tuple[list[int], list[float]]) -> dict[str, Any]:
    """A vLLM chat answer carrying each completion's sampled token ids and their log-probs (what the
    rollout engine asks for), for ``Reply(body=...)``."""
    return {"choices": [{"index": i, "message": {"role": "assistant", "content": "x"}, "token_ids": ids,
                         "logprobs": {"content": [{"token": f"token_id:{t}", "logprob": lp} for t, lp in zip(ids, lps)]}}
                        for i, (ids, lps) in enumerate(completions)]}


def plausible_handler(request: dict[str, Any]) -> Reply:
    """Teachers answer (A); a merger prompt gets a valid trace ending in its 'Correct Answer' letter.
    For build-questions: a request for JSON (``response_format``) gets one question, and an audio
    request without text (a captioner) a caption; both carry the request's marker (``request_marker``)."""
    content = request["messages"][-1]["content"]
    text = content if isinstance(content, str) else " ".join(p.get("text", "") for p in content if p.get("type") == "text")
    if request.get("response_format"):
        question = {"question": f"{request_marker(request)}: which sound is heard first in the clip?",
                    "correct_answer": "a dog barking", "distractors": ["a cat meowing", "a bell ringing", "rain falling"]}
        return Reply(json.dumps({"questions": [question]}))
    if not text and not isinstance(content, str):
        return Reply(f"{request_marker(request)}: a dog barks twice, then a bell rings.")
    gold = re.search(r"Correct Answer:\s*\(?([A-Z])", text)
    if gold:
        return Reply(f"<think>The frames and the sound point the same way.</think><answer>{gold.group(1)}</answer>")
    return Reply("Answer: (A)", reasoning="Looking at the input, option A fits best.")


def media_marker(data: str) -> str:
    """``D`` and 12 hex digits of a media part's base64 data: a clip's mark, carried on from its caption."""
    import hashlib

    return "D" + hashlib.sha256(data.encode()).hexdigest()[:12]


def request_marker(request: dict[str, Any]) -> str:
    """What keys a request's latency: its ``Q{i}:`` number, else a ``D…`` mark in its text (a caption
    carries its audio's), else its first media part's mark (``media_marker``), else its text."""
    content = request["messages"][-1]["content"]
    text = content if isinstance(content, str) else " ".join(p.get("text", "") for p in content if p.get("type") == "text")
    found = re.search(r"\bQ(\d+):|\b(D[0-9a-f]{12})\b", text)
    if found:
        return found.group(1) or found.group(2)
    for part in content if not isinstance(content, str) else []:
        media = part.get("input_audio", {}).get("data") or part.get("image_url", {}).get("url")
        if media:
            return media_marker(media)
    return text


def lognormal_latency(median: float, sigma: float, seed: int) -> Callable[[dict[str, Any]], float]:
    """Heavy-tailed latency, a pure function of (seed, model, the request's marker): the same request
    always takes the same time, whatever the order of arrival, so a benchmark can compute the ideal."""

    def latency(request: dict[str, Any]) -> float:
        return lognormal_seconds(median, sigma, seed, request.get("model", ""), request_marker(request))

    return latency


def lognormal_seconds(median: float, sigma: float, seed: int, model: str, key: str) -> float:
    """The latency of one request, keyed by model and question number (``Q{i}:``) or text."""
    import hashlib
    import math
    import random

    digest = hashlib.sha256(f"{seed}|{model}|{key}".encode()).digest()
    return median * math.exp(sigma * random.Random(digest).gauss(0.0, 1.0))


def main() -> None:
    """Run the scripted server standalone (for benchmarks): ``python -m tests.scripted_server --latency 0.2``."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every reply")
    parser.add_argument("--lognormal", nargs=2, type=float, metavar=("MEDIAN", "SIGMA"),
                        help="heavy-tailed latency instead: lognormal with this median (s) and sigma, seeded")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    latency = lognormal_latency(*args.lognormal, args.seed) if args.lognormal else args.latency
    server = ScriptedServer(plausible_handler, latency=latency)
    print(server.url, flush=True)
    server._httpd.serve_forever()


if __name__ == "__main__":
    main()
