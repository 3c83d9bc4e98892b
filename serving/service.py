"""The delay model as a BentoML 1.4 service: ``POST /predict`` with adaptive batching.

The champion arrives as one BentoML model (``flight_delay:<tag>``) holding the saved unit
(weights + preprocessing, ``ml.model.ModelUnit``), packed into the Bento at build time.
``FLIGHT_DELAY_MODEL_TAG`` picks the model when serving from source (default: the newest).
"""

from __future__ import annotations

import os
import time
import uuid

import bentoml
import numpy as np
import pandas as pd

from ml.model import ModelUnit
from serving.middleware import BearerTokenAuth, BodySizeLimit
from serving.prediction_log import SCORE, PredictionLog, default_url
from serving.schema import REQUEST_COLUMNS, Flights, Prediction

MODEL_NAME = "flight_delay"
MODEL_TAG = os.environ.get("FLIGHT_DELAY_MODEL_TAG") or f"{MODEL_NAME}:latest"
UNIT_FOLDER = "unit"

LOG_DTYPES = {
    "date": "string", "carrier": "string", "flight": "Int64", "origin": "string", "dest": "string",
    **{c: "float64" for c in REQUEST_COLUMNS[5:]},
}
"""One schema for every prediction log file, whatever a request left out."""

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
    workers=int(os.environ.get("SERVICE_WORKERS", "1")),
    logging={"access": {"enabled": os.environ.get("SERVICE_ACCESS_LOG", "false").lower() == "true"}},
    metrics={"enabled": True},
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

    def __is_ready__(self) -> bool:
        return getattr(self, "unit", None) is not None

    @bentoml.on_shutdown
    def close_prediction_log(self) -> None:
        self.prediction_log.close()

    @bentoml.api(route="/predict", batchable=True, max_batch_size=256, max_latency_ms=50)
    def predict(self, flights: Flights) -> list[Prediction]:
        """P(arrives 15+ minutes late) for each flight; every prediction is logged.

        Adaptive batching merges concurrent requests into one call of up to ``max_batch_size`` flights.
        """
        started = time.perf_counter()
        frame = pd.DataFrame([f.__dict__ for f in flights], columns=list(REQUEST_COLUMNS)).astype(LOG_DTYPES)
        scores = self.unit.predict_proba(frame)
        elapsed_ms = (time.perf_counter() - started) * 1000
        ids = [uuid.uuid4().hex for _ in flights]
        _observe_scores(scores)
        frame.insert(0, "request_id", ids)
        frame["served_at"] = pd.Timestamp.now(tz="UTC")
        frame["model_version"] = self.model_version
        frame[SCORE] = scores.astype("float64")
        frame["inference_ms"] = elapsed_ms
        frame["batch_size"] = len(flights)
        self.prediction_log.append(frame)
        version = self.model_version
        return [Prediction(request_id=i, delay_probability=float(s), model_version=version) for i, s in zip(ids, scores)]


def _observe_scores(scores: np.ndarray) -> None:
    for value in scores.tolist():
        SCORE_HISTOGRAM.observe(value)


FlightDelay.add_asgi_middleware(BodySizeLimit, max_bytes=int(os.environ.get("SERVICE_MAX_BODY_BYTES", 1 << 20)))
FlightDelay.add_asgi_middleware(BearerTokenAuth)
