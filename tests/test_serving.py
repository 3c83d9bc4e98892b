"""The BentoML service: called directly, through its ASGI app, and as a real `bentoml serve` process."""

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serving.prediction_log import read_prediction_log
from serving.schema import MAX_FLIGHTS_PER_REQUEST, records_from_features
from tests.serving_helpers import (
    AUTH, TOKEN, asgi_app, check_explain_over_http, january_features, serve_env, served,
)


@pytest.fixture(scope="module")
def features() -> pd.DataFrame:
    """Real features of 2013-01-01..10."""
    return january_features()


@pytest.fixture(scope="module")
def model_tag(service_model):
    """A small real model of these days, in the session's BentoML store the way the bento asset saves the champion."""
    return service_model


@pytest.fixture
def log_url(tmp_path, monkeypatch):
    url = str(tmp_path / "predictions")
    monkeypatch.setenv("PREDICTION_LOG_URL", url)
    monkeypatch.setenv("SERVICE_API_TOKEN", TOKEN)
    return url


@pytest.fixture
def sample(features):
    return features.sample(n=40, random_state=1).reset_index(drop=True)


def _service_class(model_tag):
    """Import after the model tag is set: the service picks its model at import."""
    from serving.service import FlightDelay

    return FlightDelay


def test_service_class_scores_like_the_unit_and_logs_every_prediction(model_tag, log_url, sample):
    from serving.schema import Flight

    tag, unit = model_tag
    service = _service_class(model_tag)()
    flights = [Flight(**r) for r in records_from_features(sample)]
    predictions = service.score(flights)
    service.close_prediction_log()

    expected = unit.predict_proba(sample)
    assert np.allclose([p.delay_probability for p in predictions], expected, atol=1e-7)
    assert {p.model_version for p in predictions} == {"7"}
    assert len({p.request_id for p in predictions}) == len(sample)

    logged = read_prediction_log(log_url)
    assert sorted(logged["request_id"]) == sorted(p.request_id for p in predictions)
    assert set(logged["date"]) == set(sample["date"])
    assert (Path(log_url) / f"date={sample['date'].iloc[0]}").is_dir()
    by_id = logged.set_index("request_id")
    for p in predictions[:5]:
        assert by_id.loc[p.request_id, "delay_probability"] == pytest.approx(p.delay_probability)
    assert logged["temp"].notna().any() and logged["inference_ms"].gt(0).all()


def test_the_largest_valid_batch_fits_the_default_body_limit(features, monkeypatch):
    """A full batch of real flights with every feature is under the body limit, with room for longer numbers:
    a batch the schema accepts is never a 413."""
    from infra import settings

    monkeypatch.delenv("SERVICE_MAX_BODY_BYTES", raising=False)
    batch = records_from_features(features.sample(n=MAX_FLIGHTS_PER_REQUEST, replace=True, random_state=2))
    assert 2 * len(json.dumps({"flights": batch}).encode()) <= settings.serving().max_body_bytes


def test_unknown_carrier_and_airport_are_scored_not_rejected(model_tag, log_url, sample):
    from serving.schema import Flight

    service = _service_class(model_tag)()
    record = {**records_from_features(sample.head(1))[0], "carrier": "ZZ", "dest": "XYZ"}
    (prediction,) = service.score([Flight(**record)])
    service.close_prediction_log()
    assert 0.0 < prediction.delay_probability < 1.0


@pytest.fixture
def client(model_tag, log_url):
    from starlette.testclient import TestClient

    _service_class(model_tag)
    with TestClient(asgi_app()) as test_client:
        yield test_client


def _bad_requests(record: dict) -> dict[str, bytes]:
    as_json = lambda flights: json.dumps({"flights": flights}).encode()  # noqa: E731
    return {
        "malformed JSON": b'{"flights": [',
        "not an object": b"[1, 2, 3]",
        "wrong type": as_json([{**record, "distance": "far"}]),
        "NaN": as_json([{**record, "temp": math.nan}]),
        "infinity": as_json([{**record, "pressure": math.inf}]),
        "out of range": as_json([{**record, "wind_speed": 1048.0}]),
        "unknown field": as_json([{**record, "dep_delay": 30}]),
        "missing field": as_json([{k: v for k, v in record.items() if k != "distance"}]),
        "empty batch": as_json([]),
        "oversized batch": as_json([record] * (MAX_FLIGHTS_PER_REQUEST + 1)),
    }


def test_asgi_app_validates_and_authenticates(client, sample):
    record = records_from_features(sample.head(1))[0]
    ok = client.post("/predict", json={"flights": [record]}, headers=AUTH)
    assert ok.status_code == 200, ok.text
    assert set(ok.json()[0]) == {"request_id", "delay_probability", "model_version"}
    assert ok.headers["content-type"] == "application/json"
    answer = client.get("/docs.json", headers=AUTH).json()["paths"]["/predict"]["post"]["responses"]["200"]["content"]
    assert answer["application/json"]["schema"]["type"] == "array", "the spec still documents list[Prediction]"

    assert client.post("/predict", json={"flights": [record]}).status_code == 401
    assert client.post("/predict", json={"flights": [record]}, headers={"Authorization": "Bearer nope"}).status_code == 401
    for name, body in _bad_requests(record).items():
        response = client.post("/predict", content=body, headers={**AUTH, "Content-Type": "application/json"})
        assert 400 <= response.status_code < 500, (name, response.status_code, response.text)
        assert "Traceback" not in response.text and response.json(), name
    assert client.get("/readyz").status_code == 200
    assert client.get("/livez").status_code == 200  # probes need no token (/metrics: the served test)


def test_answers_are_encoded_as_bentoml_would_write_them():
    from serving.responses import predictions_json
    from serving.schema import Prediction

    predictions = [Prediction(request_id=f"id{i}", delay_probability=p, model_version="7")
                   for i, p in enumerate([0.1, 1 / 3, 0.0, 1.0, 2.5e-7])]
    assert json.loads(predictions_json(predictions)) == [p.model_dump(mode="json") for p in predictions]
    assert predictions_json([]) == b"[]"


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_served_process_over_http(model_tag, sample, tmp_path, scheme):
    """The same calls over plain HTTP and over HTTPS (SERVICE_TLS_CERTFILE/KEYFILE; a throwaway CA the client verifies)."""
    import httpx

    from infra import settings
    from tests.tls import make_tls_files, plain_http_refused, untrusted_client_refused

    tag, unit = model_tag
    log_url = tmp_path / "served-predictions"
    records = records_from_features(sample)
    tls = make_tls_files(tmp_path / "tls") if scheme == "https" else None
    verify = tls.client_context() if tls else True
    with (served(serve_env(tag, log_url), tmp_path / "serve.log", tls=tls) as (url, _),
          httpx.Client(base_url=url, timeout=30, verify=verify) as http):
        assert url.startswith(f"{scheme}://")
        if tls:
            plain_http_refused(url)
            untrusted_client_refused(f"{url}/livez")
        assert http.get("/livez").status_code == 200
        assert http.post("/predict", json={"flights": records[:1]}).status_code == 401

        response = http.post("/predict", json={"flights": records}, headers=AUTH)
        assert response.status_code == 200, response.text
        assert np.allclose([p["delay_probability"] for p in response.json()], unit.predict_proba(sample), atol=1e-6)

        huge = b'{"flights": [' + b" " * (settings.serving().max_body_bytes + 1) + b"]}"
        assert http.post("/predict", content=huge, headers={**AUTH, "Content-Type": "application/json"}).status_code == 413
        for name, body in _bad_requests(records[0]).items():
            bad = http.post("/predict", content=body, headers={**AUTH, "Content-Type": "application/json"})
            assert 400 <= bad.status_code < 500, (name, bad.status_code, bad.text)

        again = http.post("/predict", json={"flights": records[:3]}, headers=AUTH)
        assert again.status_code == 200, "the service stays up after bad requests"
        check_explain_over_http(http, records, unit)
        assert http.get("/metrics").status_code == 401, "/metrics needs the token unless SERVICE_METRICS_PUBLIC=true"
        metrics = http.get("/metrics", headers=AUTH).text
        assert "flight_delay_score_bucket" in metrics
        assert 'flight_delay_model_info{bento_model="' + tag + '",model_version="7"' in metrics
        assert "flight_delay_prediction_log_dropped_rows_total 0.0" in metrics
        served_ids = {p["request_id"] for p in response.json()} | {p["request_id"] for p in again.json()}

    logged = read_prediction_log(str(log_url))  # flushed at shutdown
    assert set(logged["request_id"]) == served_ids


def test_serving_never_imports_dagster_or_mlflow(tmp_path):
    import subprocess

    code = (
        "import sys, serving.service, serving.build, serving.prediction_log;"
        "print(sorted(m for m in ('dagster', 'mlflow', 'sklearn') if m in sys.modules))"
    )
    env = {**os.environ, "BENTOML_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"


def test_prediction_log_buffer_is_capped_on_append_dropping_the_oldest_counted(tmp_path, caplog):
    from serving.prediction_log import PredictionLog

    log = PredictionLog(str(tmp_path / "predictions"), flush_rows=10**9, flush_seconds=3600, max_buffer_rows=100)
    rows = [{"request_id": f"r{i:03d}", "date": "2013-01-01", "delay_probability": 0.5} for i in range(150)]
    for start in range(0, 150, 50):
        log.append(rows[start : start + 50])
    assert log.rows_dropped == 50, "the buffer holds at most max_buffer_rows, whatever storage does"
    with caplog.at_level("ERROR", logger="serving.prediction_log"):
        assert log.flush() == 100
    assert "dropped the 50 oldest rows" in caplog.text
    log.close()
    assert sorted(read_prediction_log(str(tmp_path / "predictions"))["request_id"]) == [r["request_id"] for r in rows[50:]]

    dropped = []  # the service's Prometheus counter, flight_delay_prediction_log_dropped_rows_total
    counted = PredictionLog(str(tmp_path / "other"), flush_seconds=3600, max_buffer_rows=10, on_drop=dropped.append)
    counted.append(rows[:25])
    assert sum(dropped) == 15
    counted.close()


def test_prediction_log_rows_appended_after_close_are_written_not_lost(tmp_path):
    from serving.prediction_log import PredictionLog

    log = PredictionLog(str(tmp_path / "predictions"), flush_seconds=3600)
    log.close()
    log.append([{"request_id": "late", "date": "2013-01-02", "delay_probability": 0.1}])
    assert list(read_prediction_log(str(tmp_path / "predictions"))["request_id"]) == ["late"]


def test_verified_unit_is_required_to_serve(model_tag, tmp_path):
    """A model without ``unit_sha256`` or whose unit changed after it was recorded is refused."""
    import shutil

    import bentoml

    from ml.model import UnitIntegrityError
    from serving.service import load_verified_unit
    from tests.serving_helpers import store_model

    tag, _ = model_tag
    stored = bentoml.models.get(tag)
    assert load_verified_unit(stored) is not None
    unit_dir = tmp_path / "unit"
    shutil.copytree(stored.path_of("unit"), unit_dir)
    with pytest.raises(UnitIntegrityError, match="no 'unit_sha256'"):
        load_verified_unit(bentoml.models.get(store_model(unit_dir, "8", digest=None)))
    with pytest.raises(UnitIntegrityError, match="does not match"):
        load_verified_unit(bentoml.models.get(store_model(unit_dir, "9", digest="0" * 64)))


def _run(coroutine):
    import asyncio

    return asyncio.run(coroutine)


def test_batcher_merges_concurrent_requests_and_answers_a_lone_one_at_once_after_a_backlog():
    import asyncio
    import threading

    from serving.batching import MicroBatcher

    gate, batches = threading.Event(), []

    def score(rows):
        batches.append(list(rows))
        gate.wait(30)
        return [r * 10 for r in rows]

    async def scenario():
        batcher = MicroBatcher(max_batch_rows=4, max_wait_s=3600)
        batcher.start(score)
        first = asyncio.create_task(batcher.submit([1]))
        while not batches:  # the first batch is in the scorer, held at the gate
            await asyncio.sleep(0)
        backlog = [asyncio.create_task(batcher.submit([i])) for i in range(2, 8)]
        await asyncio.sleep(0)
        gate.set()
        answers = await asyncio.gather(first, *backlog)
        lone = await batcher.submit([99])
        return answers, lone

    answers, lone = _run(scenario())
    assert answers == [[10], [20], [30], [40], [50], [60], [70]]
    assert batches == [[1], [2, 3, 4, 5], [6, 7], [99]], "the backlog is merged; the lone request goes alone, at once"
    assert lone == [990]


def test_batcher_sheds_at_the_door_while_the_oldest_waits_too_long_and_forgets_it_after():
    from serving.batching import ARRIVAL, MicroBatcher, Overloaded

    batcher = MicroBatcher(max_batch_rows=4, max_wait_s=1.0)
    scored = []
    batcher.start(lambda rows: scored.extend(rows) or rows)
    stuck = batcher.arrive()
    stuck.at -= 0.6  # a request being read for 0.6 s: more than half the bound
    assert batcher.arrive() is None and batcher.shed["queue"] == 1
    batcher.leave(stuck)
    assert batcher.arrive() is not None, "nothing waits any more: admitted again, nothing left over"

    async def late_request():
        arrival = batcher.arrive()
        arrival.at -= 2.0  # it waited longer than the bound before reaching the queue
        ARRIVAL.set(arrival)
        return await batcher.submit(["late"])

    with pytest.raises(Overloaded, match="waited"):
        _run(late_request())
    assert batcher.shed["late"] == 1 and "late" not in scored, "a late request is dropped unscored"
