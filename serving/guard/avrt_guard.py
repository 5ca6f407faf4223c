"""An ASGI middleware for vLLM that refuses every request without the run's secret.

vLLM's API key guards only ``/v1/...``; in dev mode (``VLLM_SERVER_DEV_MODE=1``) its control routes
(``/collective_rpc``, the weight-transfer routes, the cache resets, ``/sleep``) answer anyone who
can reach the port. A rollout server started for avrt loads this module with
``--middleware avrt_guard.RolloutGuard`` (its folder on ``PYTHONPATH``), and then every HTTP request,
whatever its route (``/health`` and ``/metrics`` too), needs ``Authorization: Bearer <secret>``;
anything else gets 401, and a websocket is closed before it opens. Lifespan events pass.

The secret comes from the environment variable ``AVRT_ROLLOUT_SECRET``, never from the command line;
a server started without it fails at start-up. The module needs only the standard library: vLLM's
environment does not have avrt installed (``serving.vllm_server`` puts this folder on the server's
``PYTHONPATH`` and holds the names used here).
"""

from __future__ import annotations

import hmac
import os

SECRET_ENV = "AVRT_ROLLOUT_SECRET"  # the same name as serving.vllm_server.SECRET_ENV (a test checks)
MIN_LENGTH = 16
REFUSAL = b'{"error": "Unauthorized: this server needs the run\'s secret (Authorization: Bearer ...)"}'


def read_secret() -> bytes:
    """The secret from ``AVRT_ROLLOUT_SECRET``; a clear error when it is missing or too short to guard."""
    secret = os.environ.get(SECRET_ENV, "")
    if len(secret) < MIN_LENGTH:
        raise RuntimeError(f"avrt_guard: set {SECRET_ENV} to the run's secret (at least {MIN_LENGTH} characters) "
                           "in the server's environment; see docs/training.md")
    return secret.encode()


SECRET = read_secret()  # at import: vLLM imports the middleware while it starts, so a missing secret stops it


class RolloutGuard:
    """Pass a request to ``app`` only with ``Authorization: Bearer <secret>`` (compared in constant time)."""

    def __init__(self, app) -> None:
        self.app = app
        self.expected = b"Bearer " + SECRET

    def authorized(self, scope: dict) -> bool:
        values = [value for name, value in scope.get("headers") or () if name.lower() == b"authorization"]
        return len(values) == 1 and hmac.compare_digest(values[0], self.expected)

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] not in ("http", "websocket") or self.authorized(scope):
            await self.app(scope, receive, send)  # lifespan (start-up, shutdown): no request to refuse
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # before accept: the client gets HTTP 403
        else:
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(REFUSAL)).encode()),
                                    (b"www-authenticate", b"Bearer")]})
            await send({"type": "http.response.body", "body": REFUSAL})
