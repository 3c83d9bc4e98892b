"""Shared by the serving tests: real features, a small trained unit, a verified BentoML model, `bentoml serve`."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from pathlib import Path

import pandas as pd

from tests.servers import free_port, running_server

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def january_features(last_day: int = 10) -> pd.DataFrame:
    """Real features of 2013-01-01..``last_day``."""
    from ml.contracts import AIRPORTS, FLIGHTS, PLANES, WEATHER
    from ml.features import build_features
    from ml.parsing import parse_frame
    from ml.reference_data import read_table

    keep = lambda t: t[(t.month == "1") & (t.day.astype(int) <= last_day)].reset_index(drop=True)  # noqa: E731
    return build_features(
        parse_frame(keep(read_table("flights")), FLIGHTS, "f").frame,
        parse_frame(keep(read_table("weather")), WEATHER, "w").frame,
        parse_frame(read_table("planes"), PLANES, "p").frame,
        parse_frame(read_table("airports"), AIRPORTS, "a").frame,
    )


def train_small_unit(features: pd.DataFrame, folder: Path):
    """A small real model (two epochs) saved as a unit under ``folder``; returns (unit dir, unit)."""
    from ml.dataset import TRAIN, VALIDATION, WindowSpec, assign_splits, split_days
    from ml.train import TrainConfig, train_model

    days = sorted(features["date"].unique())
    split = assign_splits(features, split_days(days, WindowSpec(validation_days=2, test_days=2)))
    trained = train_model(split[split.split == TRAIN], split[split.split == VALIDATION], TrainConfig(epochs=2, patience=1))
    return trained.unit.save(folder / "unit"), trained.unit


def store_model(unit_dir: Path, version: str, digest: str | None = "auto") -> str:
    """Save a unit into this session's BentoML store as the bento asset does, with its ``unit_sha256``
    (``digest="auto"``: the unit's own; ``None``: left out). Returns the model's tag."""
    import shutil
    import uuid

    import bentoml

    from ml.model import unit_digest

    metadata = {"mlflow_version": version, "mlflow_run_id": uuid.uuid4().hex, "mlflow_model_uri": f"models:/flight_delay/{version}"}
    if digest is not None:
        metadata["unit_sha256"] = unit_digest(unit_dir) if digest == "auto" else digest
    with bentoml.models.create(f"flight_delay:v{version}-{uuid.uuid4().hex[:12]}", labels={"source": "test"}, metadata=metadata) as model:
        shutil.copytree(unit_dir, model.path_of("unit"))
    return str(model.tag)


def serve_env(model_tag: str, log_url: Path | str, **overrides: str) -> dict[str, str]:
    env = {**os.environ, "SERVICE_API_TOKEN": TOKEN, "PREDICTION_LOG_URL": str(log_url), "FLIGHT_DELAY_MODEL_TAG": model_tag}
    for name in ("SERVICE_AUTH_DISABLED", "SERVICE_TLS_CERTFILE", "SERVICE_TLS_KEYFILE"):  # TLS: served(tls=...)
        env.pop(name, None)
    env.update(overrides)
    return {k: v for k, v in env.items() if v is not None}


def serve_command(port: int) -> list[str]:
    return [str(Path(sys.executable).parent / "bentoml"), "serve", "serving.service:FlightDelay",
            "--host", "127.0.0.1", "-p", str(port)]


def stop_server(process) -> None:
    """Stop a `bentoml serve` process and every worker it started (workers run in sessions of their
    own, so killing the server's process group would orphan them): SIGTERM, then SIGKILL what is left."""
    import psutil

    try:
        workers = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        workers = []
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=60)
        except Exception:
            process.kill()
            process.wait()
    for worker in workers:
        with contextlib.suppress(psutil.NoSuchProcess):
            worker.kill()


@contextlib.contextmanager
def served(env: dict[str, str], log: Path, timeout_s: float = 120, tls=None):
    """A real ``bentoml serve`` of the service; yields (base URL, process).

    With ``tls`` (``tests.tls.TlsFiles``) it serves HTTPS only, turned on as in production by
    ``SERVICE_TLS_CERTFILE``/``SERVICE_TLS_KEYFILE``; clients verify it with ``tls.client_context()``.
    """
    port = free_port()
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    if tls:
        env = {**env, "SERVICE_TLS_CERTFILE": str(tls.cert), "SERVICE_TLS_KEYFILE": str(tls.key)}
    with running_server(serve_command(port), f"{url}/readyz", log, timeout_s=timeout_s, env=env,
                        ssl_context=tls.client_context() if tls else None) as process:
        yield url, process


def check_explain_over_http(http, records: list[dict], unit) -> None:
    """``POST /explain`` on a served process: the unit's probabilities, signed attributions of its own
    features (never the flight number), the token required, the batch bound enforced."""
    import numpy as np

    from serving.explain import MAX_EXPLAIN_FLIGHTS

    assert http.post("/explain", json={"flights": records[:1]}).status_code == 401
    response = http.post("/explain", json={"flights": records[:5], "top_k": 3}, headers=AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert np.allclose([e["delay_probability"] for e in body], unit.predict_records(records[:5]), atol=1e-6)
    features = {*unit.preprocessor.categorical, *unit.preprocessor.numeric}
    for explanation in body:
        assert len(explanation["contributions"]) == 3
        assert {c["feature"] for c in explanation["contributions"]} <= features and "flight" not in features
        assert any(c["attribution"] != 0 for c in explanation["contributions"])
    too_many = http.post("/explain", json={"flights": records[:1] * (MAX_EXPLAIN_FLIGHTS + 1)}, headers=AUTH)
    assert too_many.status_code == 400, too_many.text


def in_process_service_model(folder: Path) -> tuple[str, object]:
    """(tag, unit) of the one model every in-process ``serving.service`` import in this pytest session serves.

    The service picks its model when the module is first imported, so test modules that build it in
    process share this model (stored as version 7) instead of each setting its own tag and getting
    whichever module ran first. The module is imported here, with the tag set only meanwhile: a tag left
    in the environment would follow every later ``bentoml build`` and served process of the session."""
    import importlib

    unit_dir, unit = train_small_unit(january_features(), folder)
    tag = store_model(unit_dir, "7")
    previous = os.environ.get("FLIGHT_DELAY_MODEL_TAG")
    os.environ["FLIGHT_DELAY_MODEL_TAG"] = tag
    try:
        service = importlib.import_module("serving.service")
    finally:
        if previous is None:
            os.environ.pop("FLIGHT_DELAY_MODEL_TAG")
        else:
            os.environ["FLIGHT_DELAY_MODEL_TAG"] = previous
    if service.MODEL_TAG != tag:
        raise RuntimeError(f"serving.service was imported before the session's model was stored: it serves {service.MODEL_TAG}")
    return tag, unit



@functools.lru_cache(maxsize=1)
def asgi_app():
    """The service's ASGI app, built once per test process: BentoML registers its request metrics when it builds
    one, and a second build in the same process is a duplicate time series."""
    from serving.service import FlightDelay

    return FlightDelay.to_asgi()
