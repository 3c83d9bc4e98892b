"""serving.metrics: every answer counted by endpoint and code, rejections by reason, durations observed."""

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from serving.metrics import RequestMetrics, endpoint_of
from serving.middleware import BearerTokenAuth, BodySizeLimit

TOKEN = "metrics-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _app():
    """A small Starlette app behind the service's own middlewares, in the service's order."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def predict(request):
        body = await request.json()
        if not body.get("flights"):
            return JSONResponse({"error": "no flights"}, status_code=400)
        return JSONResponse([{"delay_probability": 0.5}] * len(body["flights"]))

    async def boom(request):
        raise RuntimeError("broken handler")

    async def livez(request):
        return JSONResponse({})

    app = Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/livez", livez),
                            Route("/boom", boom)])
    return BodySizeLimit(app, max_bytes=1000)


@pytest.fixture
def measured():
    from starlette.testclient import TestClient

    registry = CollectorRegistry()
    metrics = {
        "requests": Counter("t_requests", "", ["endpoint", "code"], registry=registry),
        "duration": Histogram("t_duration_seconds", "", ["endpoint"], registry=registry),
        "rejected": Counter("t_rejected", "", ["reason"], registry=registry),
    }
    app = RequestMetrics(BearerTokenAuth(_app(), token=TOKEN), **metrics)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, lambda name, **labels: registry.get_sample_value(name, labels) or 0.0


def test_every_answer_is_counted_by_endpoint_and_code_and_rejections_by_reason(measured):
    client, value = measured
    assert client.post("/predict", json={"flights": [1, 2]}, headers=AUTH).status_code == 200
    assert client.post("/predict", json={"flights": [1]}).status_code == 401
    assert client.post("/predict", json={"flights": []}, headers=AUTH).status_code == 400
    assert client.post("/predict", content=b"x" * 2000, headers=AUTH).status_code == 413
    assert client.get("/livez").status_code == 200
    assert client.get("/wp-admin/setup.php", headers=AUTH).status_code == 404
    assert client.get("/boom", headers=AUTH).status_code == 500

    assert value("t_requests_total", endpoint="/predict", code="200") == 1
    assert value("t_requests_total", endpoint="/predict", code="401") == 1
    assert value("t_requests_total", endpoint="/predict", code="400") == 1
    assert value("t_requests_total", endpoint="/predict", code="413") == 1
    assert value("t_requests_total", endpoint="/livez", code="200") == 1
    assert value("t_requests_total", endpoint="other", code="404") == 1, "unknown paths share one label"
    assert value("t_requests_total", endpoint="other", code="500") == 1, "a handler that raised counts as a 500"
    assert {r: value("t_rejected_total", reason=r) for r in ("unauthorized", "bad_request", "payload_too_large", "overloaded")} \
        == {"unauthorized": 1, "bad_request": 1, "payload_too_large": 1, "overloaded": 0}
    assert value("t_duration_seconds_count", endpoint="/predict") == 4
    assert value("t_duration_seconds_sum", endpoint="/predict") > 0


def test_endpoint_label_is_bounded():
    assert endpoint_of("/predict") == "/predict"
    assert endpoint_of("/predict/../../etc/passwd") == "other"
