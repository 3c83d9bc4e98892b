"""The delay model as a BentoML 1.4 service: ``POST /predict`` with micro-batching and load shedding, ``POST /explain``.

The champion arrives as one BentoML model (``flight_delay:<tag>``) holding the saved unit
(weights + preprocessing, ``ml.model.ModelUnit``) and its SHA-256 (metadata ``unit_sha256``),
packed into the Bento at build time; the unit is verified before it is loaded.
``FLIGHT_DELAY_MODEL_TAG`` picks the model when serving from source (default: the newest).
The service refuses to start without ``SERVICE_API_TOKEN`` unless ``SERVICE_AUTH_DISABLED=true``.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import os
import time
import uuid
from typing import Annotated

import bentoml
import numpy as np
from bentoml.validators import ContentType

from infra import audit, settings, structured_logs
from ml.model import ModelUnit, UnitIntegrityError
from serving.batching import MicroBatcher, Overloaded
from serving.explain import ExplainRequest, ExplainSlots, FlightExplanation, to_response
from serving.metrics import BATCH_SIZE, LOG_DROPPED_ROWS, MODEL_INFO, SCORE_HISTOGRAM, SHED_REQUESTS, RequestMetrics
from serving.middleware import (CALLER, AuthConfigError, BearerTokenAuth, BodySizeLimit, LoadShedding, RequestContext,
                                auth_token)
from serving.prediction_log import SCORE, PredictionLog
from serving.verified_model import UNIT_DIGEST_KEY, UNIT_FOLDER, load_verified_unit  # noqa: F401 (re-exported)
from serving.responses import predictions_response
from serving.schema import Flights, Prediction, PredictRequest

logger = logging.getLogger("bentoml.flight_delay")

MODEL_NAME = "flight_delay"
MODEL_TAG = settings.serving().model_tag or f"{MODEL_NAME}:latest"
MAX_BATCH_ROWS = 256
MAX_WAIT_S = settings.serving().max_wait_s
"""How long a request may wait for its batch before it is shed (503): well inside the 10 s request timeout."""

BATCHER = MicroBatcher(max_batch_rows=MAX_BATCH_ROWS, max_wait_s=MAX_WAIT_S)
"""One per worker process: the middleware sheds by its queue, the service scores through it."""
EXPLAIN_SLOTS = ExplainSlots(settings.explain().concurrency)


@bentoml.service(
    name="flight_delay_service",
    traffic={"timeout": 10, "max_concurrency": 1024},
    # two processes on 2 cores: per-request work is BentoML's event loop, GIL-bound; one worker's loop
    # peaks near 800 req/s even in process (bench/serve_profile.py), two served 1,000-1,100 req/s over
    # HTTP at 64 clients (bench/serve_load.py); ~0.4 GB RSS each
    workers=settings.serving().workers,
    # SERVICE_ACCESS_LOG: serving.middleware.RequestContext logs each request with its id instead
    logging={"access": {"enabled": False}},
    metrics={"enabled": True},
    ssl=settings.serving().ssl_config(),  # HTTPS only when SERVICE_TLS_CERTFILE is set (docs/tls.md)
    # BentoML's OpenTelemetry middleware builds spans for every request even at its default sample
    # rate of 0 (~0.5-1 ms of event-loop CPU per request here, bench/serve_profile.py): /predict is
    # left out unless SERVICE_TRACING=true (then also set BentoML's tracing.sample_rate).
    tracing={} if settings.serving().tracing else {"excluded_urls": ["/predict", "/explain"]},
)
class FlightDelay:
    model = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        import torch

        if bentoml.server_context.worker_index is not None:  # a served worker, BentoML's logging set up
            structured_logs.configure(("", "bentoml"))
            structured_logs.init_sentry("service")
        try:
            auth_token()
            stored = self.model  # the descriptor resolves the stored model
            self.unit = load_verified_unit(stored)
        except (AuthConfigError, UnitIntegrityError) as error:
            _stop_server(error)
            raise
        torch.set_num_threads(settings.serving().torch_threads)
        self.model_version = str(stored.info.metadata.get("mlflow_version", stored.tag.version))
        self.bento_model = str(stored.tag)
        MODEL_INFO.labels(model_version=self.model_version, bento_model=self.bento_model).set(1)
        if not settings.prediction_log_location_set():
            # A served Bento runs from its own src/ folder: a default there lands where monitoring never looks.
            logger.warning("prediction log: none of PREDICTION_LOG_URL, LAKE_URL, DATA_DIR is set; writing under %s",
                           settings.prediction_log().url)
        self.prediction_log = PredictionLog(settings.prediction_log().url, on_drop=LOG_DROPPED_ROWS.inc)
        self.audit_log = audit.BufferedAuditLog(audit.open_audit_log())
        BATCHER.start(self.score)
        # Everything loaded so far lives as long as the worker: keep it out of the collector's scans
        # (full collections paused 150–230 ms before, bench/serve_profile.py; the p99 tail).
        gc.freeze()

    def __is_ready__(self) -> bool:
        return getattr(self, "unit", None) is not None

    @bentoml.on_shutdown
    def close_prediction_log(self) -> None:
        self.prediction_log.close()
        self.audit_log.close()

    @bentoml.api(route="/predict", input_spec=PredictRequest)
    async def predict(self, flights: Flights) -> Annotated[list[Prediction], ContentType("application/json")]:
        """P(arrives 15+ minutes late) for each flight; every prediction is logged.

        Concurrent requests are scored together (``serving.batching``: up to 256 flights a call, no
        learned wait); a request that cannot be served within ``SERVICE_MAX_WAIT_MS`` gets a 503.
        """
        from starlette.responses import JSONResponse

        try:
            predictions = await BATCHER.submit(flights)
        except Overloaded as error:
            SHED_REQUESTS.labels(reason=error.reason).inc()
            return JSONResponse({"error": f"overloaded: {error}; retry shortly"}, status_code=503,
                                headers={"Retry-After": "1"})
        self.audit_log.add(audit.record(
            audit.BATCH_SERVED, actor=f"caller {CALLER.get()}", token_id=CALLER.get(),
            request_id=structured_logs.REQUEST_ID.get(), prediction_ids=[p.request_id for p in predictions],
            rows=len(predictions), model_version=self.model_version,
        ))
        return predictions_response(predictions)  # serving/responses.py: why not BentoML's encoding

    @bentoml.api(route="/predict_flight")
    async def predict_flight(self, date: dt.date, carrier: str, flight: int, origin: str,
                             as_of: dt.datetime | None = None) -> dict:
        """P(arrives 15+ minutes late) from a flight key alone: the features the stream processor kept at the
        flight's cutoff (``serving/live_lookup.py``: 404 unknown, 425 before the cutoff, 503 stale), scored in the
        same micro-batches as ``/predict`` and logged like them."""
        from pydantic import ValidationError
        from starlette.responses import JSONResponse

        from serving.live_lookup import look_up
        from serving.schema import Flight
        from streaming.events import FlightKey

        try:
            key = FlightKey(date=date, carrier=carrier, flight=flight, origin=origin)
        except ValueError as error:
            return JSONResponse({"error": f"not a flight key: {error}"}, status_code=422)
        stream = settings.stream()
        answer = look_up(self._live_state(stream), key, as_of, stream.max_state_age_s)
        if answer.status != 200:
            headers = {"Retry-After": str(answer.retry_after_s)} if answer.retry_after_s else {}
            return JSONResponse({"error": answer.message, "flight": key.id()}, status_code=answer.status, headers=headers)
        try:
            row = Flight.model_validate({**answer.features, "date": key.date, "flight": flight})
        except ValidationError as error:  # a live value outside the request schema's ranges: say so, never guess
            return JSONResponse({"error": f"the live features of {key.id()} fail the request schema: {error}"},
                                status_code=500)
        try:
            (prediction,) = await BATCHER.submit([row])
        except Overloaded as error:
            SHED_REQUESTS.labels(reason=error.reason).inc()
            return JSONResponse({"error": f"overloaded: {error}; retry shortly"}, status_code=503,
                                headers={"Retry-After": "1"})
        return {"flight": key.id(), "delay_probability": prediction.delay_probability,
                "model_version": prediction.model_version, "request_id": prediction.request_id,
                "cutoff": answer.cutoff.isoformat()}

    def _live_state(self, stream):
        if getattr(self, "live_state", None) is None:
            from streaming.state_store import StateStore

            self.live_state = StateStore(stream.redis_url_value(), stream.namespace)
        return self.live_state

    @bentoml.api(route="/explain", input_spec=ExplainRequest)
    def explain(self, flights: list, top_k: int) -> list[FlightExplanation]:
        """Each flight's probability and its top contributing features (``ml.explain``: integrated gradients).

        Not logged as predictions. At most ``EXPLAIN_CONCURRENCY`` explanations run at once per worker
        (in BentoML's thread pool, beside the batcher); a request beyond that gets a 503 at once.
        """
        from starlette.responses import JSONResponse

        from ml.explain import explain_records

        if not EXPLAIN_SLOTS.try_acquire():
            SHED_REQUESTS.labels(reason="explain").inc()
            return JSONResponse({"error": "overloaded: explanations are being computed; retry shortly"},
                                status_code=503, headers={"Retry-After": "1"})
        try:
            rows = [f.__dict__ for f in flights]
            return to_response(explain_records(self.unit, rows, top_k, settings.explain().ig_steps), self.model_version)
        finally:
            EXPLAIN_SLOTS.release()

    def score(self, flights: list) -> list[Prediction]:
        """Score and log one batch of validated flights (runs in the batcher's thread)."""
        started = time.perf_counter()
        rows = [f.__dict__ for f in flights]
        scores = self.unit.predict_records(rows)
        elapsed_ms = (time.perf_counter() - started) * 1000
        _observe_scores(scores)
        BATCH_SIZE.observe(len(rows))
        served_at, version, size = dt.datetime.now(dt.timezone.utc), self.model_version, len(rows)
        predictions, log_rows = [], []
        for row, score in zip(rows, scores.tolist()):
            request_id = uuid.uuid4().hex
            predictions.append(Prediction(request_id=request_id, delay_probability=score, model_version=version))
            log_rows.append({**row, "request_id": request_id, "served_at": served_at, "model_version": version,
                             SCORE: score, "inference_ms": elapsed_ms, "batch_size": size})
        self.prediction_log.append(log_rows)
        return predictions


def _stop_server(error: Exception) -> None:
    """A worker that can never start (no token, an unverifiable unit) stops the whole server.

    BentoML's supervisor restarts a failed worker forever; for an error no restart can fix, the
    ``bentoml serve`` process exits instead, with the reason as the last thing in its log.
    """
    import signal

    logger.critical("flight-delay service not started: %s", error)
    if bentoml.server_context.worker_index is not None:  # a served worker; its parent is the server
        os.kill(os.getppid(), signal.SIGTERM)


def _observe_scores(scores: np.ndarray) -> None:
    for value in scores.tolist():
        SCORE_HISTOGRAM.observe(value)


# Starlette runs the first added outermost: metrics see every answer, the request id (every answer carries it),
# auth before anything reads the body, then shedding, then the size limit.
FlightDelay.add_asgi_middleware(RequestMetrics)
FlightDelay.add_asgi_middleware(RequestContext)
FlightDelay.add_asgi_middleware(BearerTokenAuth)
FlightDelay.add_asgi_middleware(LoadShedding, batcher=BATCHER, on_shed=lambda reason: SHED_REQUESTS.labels(reason=reason).inc())
FlightDelay.add_asgi_middleware(BodySizeLimit, max_bytes=settings.serving().max_body_bytes)
