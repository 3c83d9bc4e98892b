"""The service's Prometheus metrics, every one declared here, and the middleware that counts and times requests.

A metric name may be registered only once per process, so each is declared once, at import of this
module, and ``serving.service`` imports them. Their names are what the alert rules and dashboards
(``deploy/monitoring``) query: renaming one silently empties a panel or an alert.

``RequestMetrics`` is added outermost (``serving.service``), so it also sees what the other middlewares
answer before BentoML does: 401 (auth), 503 (load shedding), 413 (size limit). BentoML's own request
metrics only count the API routes it handles. Endpoints outside ``ENDPOINTS`` are counted as ``other``:
a scanner probing random paths cannot grow the number of series.
"""

from __future__ import annotations

import time

import bentoml
import numpy as np

ENDPOINTS = frozenset({"/predict", "/livez", "/readyz", "/healthz", "/metrics"})
OTHER_ENDPOINT = "other"
REJECTION_REASONS = {400: "bad_request", 401: "unauthorized", 413: "payload_too_large", 422: "bad_request", 503: "overloaded"}
"""Status codes the service answers on purpose, as ``flight_delay_rejected_requests_total{reason}``."""

HTTP_REQUESTS = bentoml.metrics.Counter(
    name="flight_delay_http_requests",
    documentation="HTTP requests answered, by endpoint and status code (auth, shedding and size rejections included)",
    labelnames=["endpoint", "code"],
)
HTTP_DURATION = bentoml.metrics.Histogram(
    name="flight_delay_http_request_duration_seconds",
    documentation="Time from a request's arrival to the end of its response, by endpoint",
    labelnames=["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0),
)
REJECTED_REQUESTS = bentoml.metrics.Counter(
    name="flight_delay_rejected_requests",
    documentation="Requests refused on purpose, by reason: bad_request (400/422), unauthorized (401), "
                  "payload_too_large (413), overloaded (503)",
    labelnames=["reason"],
)
for _reason in set(REJECTION_REASONS.values()):
    REJECTED_REQUESTS.labels(reason=_reason)  # every reason exported from the start, at 0: rate() sees the first one
BATCH_SIZE = bentoml.metrics.Histogram(
    name="flight_delay_batch_size_rows",
    documentation="Flights scored together in one model call (the micro-batcher merges concurrent requests)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
SCORE_HISTOGRAM = bentoml.metrics.Histogram(
    name="flight_delay_score",
    documentation="Predicted probability of a 15+ minute arrival delay, per scored flight",
    buckets=tuple(np.round(np.linspace(0.05, 1.0, 20), 2)),
)
MODEL_INFO = bentoml.metrics.Gauge(
    name="flight_delay_model_info",
    documentation="1 for the model version this worker serves",
    labelnames=["model_version", "bento_model"],
)
SHED_REQUESTS = bentoml.metrics.Counter(
    name="flight_delay_shed_requests",
    documentation="Requests answered 503 because they could not be served in time (queue: refused at once; late: waited too long; explain: /explain busy)",
    labelnames=["reason"],
)
LOG_DROPPED_ROWS = bentoml.metrics.Counter(
    name="flight_delay_prediction_log_dropped_rows",
    documentation="Prediction log rows dropped (oldest first) because its buffer was full: storage too slow or down",
)


def endpoint_of(path: str) -> str:
    """The ``endpoint`` label of a request path: a known route, else ``other``."""
    return path if path in ENDPOINTS else OTHER_ENDPOINT


class RequestMetrics:
    """Counts (``endpoint``, ``code``) and times every HTTP request; counts deliberate rejections by reason.

    A request whose app raised before answering is counted as a 500. The metric objects can be given
    (tests pass their own, on a private registry).
    """

    def __init__(self, app, requests=None, duration=None, rejected=None):
        self.app = app
        self.requests = requests or HTTP_REQUESTS
        self.duration = duration or HTTP_DURATION
        self.rejected = rejected or REJECTED_REQUESTS
        self._children: dict[tuple[str, int], tuple] = {}
        """(endpoint, status) → its metric children: ``labels()`` takes a lock and validates on every call."""

    def _children_of(self, endpoint: str, status: int) -> tuple:
        children = self._children.get((endpoint, status))
        if children is None:
            reason = REJECTION_REASONS.get(status)
            children = (self.duration.labels(endpoint=endpoint), self.requests.labels(endpoint=endpoint, code=str(status)),
                        self.rejected.labels(reason=reason) if reason is not None else None)
            self._children[(endpoint, status)] = children
        return children

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500

        async def send_and_watch(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            duration, requests, rejected = self._children_of(endpoint_of(scope["path"]), status)
            duration.observe(time.perf_counter() - started)
            requests.inc()
            if rejected is not None:
                rejected.inc()
