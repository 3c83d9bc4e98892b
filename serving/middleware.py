"""ASGI middleware for the service: request ids, bearer-token auth, load shedding and a request body size limit.

Plain ASGI (no framework) so they wrap BentoML's app as-is and cost one dict lookup per request.
``serving.service`` adds them outermost first: auth (an unauthenticated caller gets a 401 before any
of its body is read), then load shedding (a 503 before the body is read), then the size limit.
"""

from __future__ import annotations

import contextvars
import hmac
import json
import logging
import re
import time
import uuid

from infra import settings
from infra.audit import token_id
from infra.structured_logs import REQUEST_ID
from serving.batching import ARRIVAL

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("bentoml.flight_delay.access")

PROBE_PATHS = frozenset({"/livez", "/readyz", "/healthz"})
"""Probes answer without a token: they carry nothing and the platform must reach them."""
METRICS_PATH = "/metrics"


class AuthConfigError(RuntimeError):
    """The service was asked to start without a token and without disabling auth explicitly."""


def auth_token() -> str | None:
    """The bearer token every non-probe request must carry, or None where auth is disabled explicitly.

    Serving open by accident is worse than not serving: without ``SERVICE_API_TOKEN`` the service
    refuses to start unless ``SERVICE_AUTH_DISABLED=true`` says so, and then warns loudly.
    """
    serving = settings.serving()
    if serving.api_token is not None:
        return serving.api_token.get_secret_value()
    if serving.auth_disabled:
        logger.warning(
            "AUTHENTICATION IS DISABLED (SERVICE_AUTH_DISABLED=true): anyone who can reach this port can call "
            "/predict and read /metrics. Set SERVICE_API_TOKEN to serve anywhere but a private machine."
        )
        return None
    raise AuthConfigError(
        "SERVICE_API_TOKEN is not set: the flight-delay service refuses to start without authentication. "
        "Set SERVICE_API_TOKEN to a secret (clients send 'Authorization: Bearer <token>'), or set "
        "SERVICE_AUTH_DISABLED=true to serve without authentication on a private machine."
    )


def metrics_public() -> bool:
    """``SERVICE_METRICS_PUBLIC=true`` lets Prometheus scrape ``/metrics`` without the token.

    /metrics carries aggregates only (request counts and latencies, the score histogram, the model
    version, shed and dropped counts), never a request's content; it still needs the token by default
    because the score distribution and traffic volume are the owner's business.
    """
    return settings.serving().metrics_public


async def _send_json(send, status: int, body: dict, headers: list[tuple[bytes, bytes]] = (), close: bool = True) -> None:
    """Answer without reading the request's body; ``close``: the server drops the connection rather than
    read and discard what the client still sends (a 50 MB body), at the cost of the client reconnecting."""
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                        *([(b"connection", b"close")] if close else []), *headers],
        }
    )
    await send({"type": "http.response.body", "body": payload})


CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="anonymous")
"""The caller's token id (``infra.audit.token_id``: a short hash, never the token), set by ``RequestContext``."""
_REQUEST_ID_HEADER = b"x-request-id"
_VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")


class RequestContext:
    """Give every request an id and name its caller: ``X-Request-ID`` if the client sent a sane one,
    else a new one; echoed in the response's ``X-Request-ID`` and set for logs (``REQUEST_ID``) and
    the audit log (``CALLER``, the token id of the ``Authorization`` header). Outermost, so even a 401
    carries the id.

    With ``access_log`` (``SERVICE_ACCESS_LOG=true``) it logs one line per request (method, path,
    status, duration, caller, request id): BentoML's own access log runs outside this middleware and
    cannot know the id.
    """

    def __init__(self, app, access_log: bool | None = None):
        self.app = app
        self.access_log = settings.serving().access_log if access_log is None else access_log

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        given = headers.get(_REQUEST_ID_HEADER, b"")
        request_id = given.decode() if _VALID_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        bearer = authorization[len("Bearer "):] if authorization.startswith("Bearer ") else None
        request_token = REQUEST_ID.set(request_id)
        caller_token = CALLER.set(token_id(bearer))
        echoed = (_REQUEST_ID_HEADER, request_id.encode())
        started, status = time.perf_counter(), None

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                kept = [h for h in message.get("headers", []) if h[0].lower() != _REQUEST_ID_HEADER]
                message = {**message, "headers": [*kept, echoed]}
            await send(message)

        try:
            return await self.app(scope, receive, send_with_id)
        finally:
            if self.access_log:
                access_logger.info("%s %s %s", scope["method"], scope["path"], status, extra={
                    "method": scope["method"], "path": scope["path"], "status": status, "caller": CALLER.get(),
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3)})
            REQUEST_ID.reset(request_token)
            CALLER.reset(caller_token)


class BearerTokenAuth:
    """401 unless ``Authorization: Bearer <token>``, checked before the body is read (constant-time compare).

    The token comes from ``auth_token()`` unless given; ``None`` (auth disabled explicitly) lets everything in.
    """

    def __init__(self, app, token: str | None = None, public_metrics: bool | None = None):
        self.app = app
        try:
            token = token if token is not None else auth_token()
            self.misconfigured = None
        except AuthConfigError as error:
            # Fail closed: the service itself refuses to start (serving.service), this is the second lock.
            token, self.misconfigured = None, str(error)
        self.expected = f"Bearer {token}".encode() if token else None
        public_metrics = metrics_public() if public_metrics is None else public_metrics
        self.open_paths = PROBE_PATHS | ({METRICS_PATH} if public_metrics else set())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            return await self.app(scope, receive, send)
        if self.misconfigured:
            return await _send_json(send, 503, {"error": "authentication is not configured on this server"})
        if self.expected is None:
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(b"authorization", b"")
        if not hmac.compare_digest(given, self.expected):
            return await _send_json(
                send, 401, {"error": "missing or wrong bearer token: send 'Authorization: Bearer <token>'"},
                [(b"www-authenticate", b"Bearer")],
            )
        return await self.app(scope, receive, send)


class LoadShedding:
    """503 with ``Retry-After`` for ``paths`` while the batcher could not serve a request in time.

    Decided before the body is read or validated, so shedding costs next to nothing when it matters.
    """

    def __init__(self, app, batcher, paths: frozenset[str] = frozenset({"/predict"}), on_shed=None):
        self.app = app
        self.batcher = batcher
        self.paths = paths
        self.on_shed = on_shed

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] not in self.paths:
            return await self.app(scope, receive, send)
        arrival = self.batcher.arrive()
        if arrival is None:
            if self.on_shed is not None:
                self.on_shed("queue")
            return await _send_json(
                send, 503, {"error": "overloaded: more work is queued than can be served in time; retry shortly"},
                [(b"retry-after", b"1")], close=False,  # bodies here are at most SERVICE_MAX_BODY_BYTES
            )
        ARRIVAL.set(arrival)
        try:
            return await self.app(scope, receive, send)
        finally:
            self.batcher.leave(arrival)


class BodySizeLimit:
    """413 for a body over ``max_bytes``: by Content-Length up front, or while a chunked body streams in."""

    def __init__(self, app, max_bytes: int = 4 << 20):
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
