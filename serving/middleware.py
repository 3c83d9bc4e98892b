"""ASGI middleware for the service: bearer-token auth and a request body size limit.

Plain ASGI (no framework) so they wrap BentoML's app as-is and cost one dict lookup per request.
"""

from __future__ import annotations

import hmac
import json
import os

EXEMPT_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/metrics"})
"""Probes and Prometheus scrape without a token: they carry no data and must work for the platform."""


async def _send_json(send, status: int, body: dict, headers: list[tuple[bytes, bytes]] = ()) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class BearerTokenAuth:
    """401 unless ``Authorization: Bearer <SERVICE_API_TOKEN>``; off when the variable is unset.

    The token is compared in constant time (``hmac.compare_digest``).
    """

    def __init__(self, app, token: str | None = None):
        self.app = app
        token = token if token is not None else os.environ.get("SERVICE_API_TOKEN", "")
        self.expected = f"Bearer {token}".encode() if token else None

    async def __call__(self, scope, receive, send):
        if self.expected is None or scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(b"authorization", b"")
        if not hmac.compare_digest(given, self.expected):
            return await _send_json(
                send, 401, {"error": "missing or wrong bearer token"}, [(b"www-authenticate", b"Bearer")]
            )
        return await self.app(scope, receive, send)


class BodySizeLimit:
    """413 for a body over ``max_bytes``: by Content-Length up front, or while a chunked body streams in."""

    def __init__(self, app, max_bytes: int = 1 << 20):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                return await _send_json(send, 400, {"error": "invalid Content-Length header"})
            if too_big:
                return await _send_json(send, 413, {"error": f"request body over {self.max_bytes} bytes"})
            return await self.app(scope, receive, send)

        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await _send_json(send, 413, {"error": f"request body over {self.max_bytes} bytes"})
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)
