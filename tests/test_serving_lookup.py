"""POST /predict_flight through the service's ASGI app, over a live state in the machine's Redis."""

import os
import time

import pytest

from ml.features import FEATURE_COLUMNS
from serving.prediction_log import read_prediction_log
from streaming.events import scheduled_msg_id
from streaming.state_store import StateStore, StoredPrediction
from tests.serving_helpers import AUTH, TOKEN, asgi_app, january_features
from tests.streaming_helpers import namespace, redis_or_skip

pytestmark = pytest.mark.server


@pytest.fixture
def live_state(monkeypatch, tmp_path):
    """A namespace holding one flight past its cutoff and one scheduled for later, as the processor writes them."""
    url = redis_or_skip()
    store = StateStore(url, namespace())
    row = january_features(6).iloc[0]
    day, key = row["date"], f"{row['date']}/{row['carrier']}/{int(row['flight'])}/{row['origin']}"
    cutoff = 22_000_000
    store.stage_prediction(day, key, StoredPrediction(features={c: row[c] for c in FEATURE_COLUMNS}, cutoff_minute=cutoff,
                                                      delay_probability=0.5, model_version="x", feature_digest="d"))
    store.stage_event(day, scheduled_msg_id(f"{day}/ZZ/9/EWR"), b"{}")
    store.stage_watermark(cutoff + 60)
    store.commit()
    store.start_epoch()
    for name, value in {"REDIS_URL": url, "STREAM_STATE_NAMESPACE": store.namespace, "SERVICE_API_TOKEN": TOKEN,
                        "PREDICTION_LOG_URL": str(tmp_path / "predictions"), "STREAM_MAX_STATE_AGE_S": "300"}.items():
        monkeypatch.setenv(name, value)
    yield store, row, key
    store.flush_namespace()


def test_a_flight_key_alone_gets_its_prediction_and_unknown_or_early_ones_say_why(service_model, live_state, monkeypatch):
    from starlette.testclient import TestClient

    _, unit = service_model
    store, row, key = live_state
    body = {"date": row["date"], "carrier": row["carrier"], "flight": int(row["flight"]), "origin": row["origin"]}
    with TestClient(asgi_app()) as client:
        ok = client.post("/predict_flight", json=body, headers=AUTH)
        assert ok.status_code == 200, ok.text
        answer = ok.json()
        assert answer["flight"] == key and answer["model_version"] == "7"
        assert answer["delay_probability"] == pytest.approx(float(unit.predict_proba(row.to_frame().T)[0]), abs=1e-6)
        unknown = client.post("/predict_flight", json={**body, "flight": 99999}, headers=AUTH)
        assert unknown.status_code == 404 and "99999" in unknown.json()["error"]
        early = client.post("/predict_flight", json={**body, "carrier": "ZZ", "flight": 9, "origin": "EWR"}, headers=AUTH)
        assert early.status_code == 425 and int(early.headers["Retry-After"]) > 0
        monkeypatch.setenv("STREAM_MAX_STATE_AGE_S", "0.001")
        time.sleep(0.01)
        stale = client.post("/predict_flight", json=body, headers=AUTH)
        assert stale.status_code == 503 and "last written" in stale.json()["error"] and stale.headers["Retry-After"] == "30"
        assert client.post("/predict_flight", json=body).status_code == 401  # the token guards it like /predict
    logged = read_prediction_log(os.environ["PREDICTION_LOG_URL"])
    assert list(logged["request_id"]) == [answer["request_id"]]  # the lookup is logged like any prediction
