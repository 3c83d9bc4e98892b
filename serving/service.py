"""The delay model as a BentoML 1.4 service: ``POST /predict`` with adaptive batching.

The champion arrives as one BentoML model (``flight_delay:<tag>``) holding the saved unit
(weights + preprocessing, ``ml.model.ModelUnit``), packed into the Bento at build time.
``FLIGHT_DELAY_MODEL_TAG`` picks the model when serving from source (default: the newest).
"""

from __future__ import annotations

import datetime as dt
import gc
import os
import time
import uuid

import bentoml
import numpy as np

from ml.model import ModelUnit
from serving.middleware import BearerTokenAuth, BodySizeLimit
from serving.prediction_log import SCORE, PredictionLog, default_url
from serving.schema import Flights, Prediction

MODEL_NAME = "flight_delay"
MODEL_TAG = os.environ.get("FLIGHT_DELAY_MODEL_TAG") or f"{MODEL_NAME}:latest"
UNIT_FOLDER = "unit"


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


@bentoml.service(
    name="flight_delay_service",
    traffic={"timeout": 10, "max_concurrency": 1024},
    # two processes on 2 cores: per-request work is BentoML's event loop, GIL-bound; one worker's loop
    # peaks near 800 req/s even in process (bench/serve_profile.py), two served 1,000-1,100 req/s over
    # HTTP at 64 clients (bench/serve_load.py); ~0.4 GB RSS each
    workers=int(os.environ.get("SERVICE_WORKERS", "2")),
    logging={"access": {"enabled": os.environ.get("SERVICE_ACCESS_LOG", "false").lower() == "true"}},
    metrics={"enabled": True},
    # BentoML's OpenTelemetry middleware builds spans for every request even at its default sample
    # rate of 0 (~0.5-1 ms of event-loop CPU per request here, bench/serve_profile.py): /predict is
    # left out unless SERVICE_TRACING=true (then also set BentoML's tracing.sample_rate).
    tracing={} if os.environ.get("SERVICE_TRACING", "false").lower() == "true" else {"excluded_urls": ["/predict"]},
)
class FlightDelay:
    model = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        import torch

        torch.set_num_threads(int(os.environ.get("SERVICE_TORCH_THREADS", "1")))
        stored = self.model  # the descriptor resolves the stored model
        self.unit = ModelUnit.load(stored.path_of(UNIT_FOLDER))
        self.model_version = str(stored.info.metadata.get("mlflow_version", stored.tag.version))
        self.bento_model = str(stored.tag)
        MODEL_INFO.labels(model_version=self.model_version, bento_model=self.bento_model).set(1)
        self.prediction_log = PredictionLog(default_url())
        # Everything loaded so far lives as long as the worker: keep it out of the collector's scans
        # (full collections paused 150–230 ms before, bench/serve_profile.py; the p99 tail).
        gc.freeze()

    def __is_ready__(self) -> bool:
        return getattr(self, "unit", None) is not None

    @bentoml.on_shutdown
    def close_prediction_log(self) -> None:
        self.prediction_log.close()

    @bentoml.api(
        route="/predict",
        batchable=True,
        max_batch_size=256,
        # the batcher's shedding threshold (503 once a request's estimated wait passes it), not a wait:
        # 50 ms shed half or more of the requests at 64 clients on 2 cores (bench/serve_load.py); 1 s
        # sheds only a real overload, well inside the 10 s request timeout.
        max_latency_ms=1_000,
    )
    def predict(self, flights: Flights) -> list[Prediction]:
        """P(arrives 15+ minutes late) for each flight; every prediction is logged.

        Adaptive batching merges concurrent requests into one call of up to ``max_batch_size`` flights.
        """
        started = time.perf_counter()
        rows = [f.__dict__ for f in flights]
        scores = self.unit.predict_records(rows)
        elapsed_ms = (time.perf_counter() - started) * 1000
        _observe_scores(scores)
        served_at, version, size = dt.datetime.now(dt.timezone.utc), self.model_version, len(rows)
        predictions, log_rows = [], []
        for row, score in zip(rows, scores.tolist()):
            request_id = uuid.uuid4().hex
            predictions.append(Prediction(request_id=request_id, delay_probability=score, model_version=version))
            log_rows.append({**row, "request_id": request_id, "served_at": served_at, "model_version": version,
                             SCORE: score, "inference_ms": elapsed_ms, "batch_size": size})
        self.prediction_log.append(log_rows)
        return predictions


def _observe_scores(scores: np.ndarray) -> None:
    for value in scores.tolist():
        SCORE_HISTOGRAM.observe(value)


FlightDelay.add_asgi_middleware(BodySizeLimit, max_bytes=int(os.environ.get("SERVICE_MAX_BODY_BYTES", 1 << 20)))
FlightDelay.add_asgi_middleware(BearerTokenAuth)
