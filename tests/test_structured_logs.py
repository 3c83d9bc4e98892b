"""JSON logs (service and pipeline), request ids, the service's audit records, and Sentry only when asked."""

import io
import json
import logging
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest

from infra import audit, structured_logs
from tests.serving_helpers import AUTH, TOKEN, january_features, serve_env, served, store_model, train_small_unit

ROOT = Path(__file__).resolve().parents[1]


def _json_lines(text: str) -> list[dict]:
    """Each JSON line on a captured stream. A line may start with another thread's unterminated write
    (the worker process is shared with earlier tests' threads): its JSON object is read from where it starts."""
    return [json.loads(line[line.index('{"'):]) for line in text.splitlines() if '{"' in line]


def test_one_json_object_per_event_with_the_request_id_and_no_secret():
    stream = io.StringIO()
    logger = logging.Logger("test.structured")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(structured_logs.StructuredFormatter())
    logger.addHandler(handler)
    token = structured_logs.REQUEST_ID.set("req-1")
    try:
        logger.info("calling %s", "https://bob:hunter2@mlflow:5000/api", extra={"rows": 3})
        try:
            raise RuntimeError("refused: api_key=sk-live-123456")
        except RuntimeError:
            logger.exception("scoring failed")
    finally:
        structured_logs.REQUEST_ID.reset(token)
    logger.warning("outside a request")
    first, failed, outside = _json_lines(stream.getvalue())
    assert first["message"] == "calling https://***@mlflow:5000/api" and first["rows"] == 3
    assert (first["level"], first["logger"], first["request_id"]) == ("INFO", "test.structured", "req-1")
    assert first["timestamp"].endswith("+00:00")
    assert "sk-live-123456" not in failed["exc_info"] and "RuntimeError" in failed["exc_info"]
    assert "request_id" not in outside
    assert "hunter2" not in stream.getvalue()


def _daily_run_logs(instance_file: str, capfd) -> tuple[list[dict], str, str]:
    """(JSON lines on stderr, run id, all of stderr) of a partitioned asset's run on the shipped instance file."""
    import yaml

    python_logs = yaml.safe_load((ROOT / "deploy" / instance_file).read_text())["python_logs"]

    @dg.asset(partitions_def=dg.DailyPartitionsDefinition(start_date="2013-01-01"))
    def daily_thing(context: dg.AssetExecutionContext):
        context.log.info("scored day password=opensesame")
        return 1

    # No compute-log capture: it mirrors the step's stderr to the terminal through `tail -F`, which polls each
    # second and is stopped when the step ends, so the step's last lines may never reach the terminal (the
    # deploys wait for it: DAGSTER_COMPUTE_LOG_TAIL_WAIT_AFTER_FINISH). Here the handler writes straight to it.
    no_capture = {"module": "dagster._core.storage.noop_compute_log_manager", "class": "NoOpComputeLogManager"}
    with dg.instance_for_test(overrides={"python_logs": python_logs, "compute_logs": no_capture}) as instance:
        result = dg.materialize([daily_thing], partition_key="2013-01-02", instance=instance)
    err = capfd.readouterr().err
    return _json_lines(err), result.run_id, err


def test_the_local_instance_keeps_json_lines_off_the_terminal_unless_asked(capfd, monkeypatch):
    """`make run` on the local instance shows people a summary; the production instance always writes JSON."""
    monkeypatch.delenv("PIPELINE_JSON_LOGS", raising=False)
    local, _, _ = _daily_run_logs("dagster-local.yaml", capfd)
    production, _, _ = _daily_run_logs("dagster-production.yaml", capfd)
    assert local == []
    assert any(line["message"].startswith("scored day") for line in production)


# Serial: Dagster applies an instance's python_logs with logging.config.dictConfig, which is process-wide.
# (STEP_SUCCESS once went missing here, in a worker and alone: that was the compute-log `tail`, see above.)
@pytest.mark.serial
@pytest.mark.parametrize("instance_file", ["dagster-local.yaml", "dagster-production.yaml"])
def test_pipeline_events_are_json_with_run_asset_and_partition(capfd, instance_file, monkeypatch):
    """The instance file's python_logs handler, as shipped, on a partitioned asset's run (JSON asked for locally)."""
    monkeypatch.setenv("PIPELINE_JSON_LOGS", "true")
    lines, run_id, _ = _daily_run_logs(instance_file, capfd)
    (mine,) = [line for line in lines if line["message"].startswith("scored day")]
    assert (mine["run_id"], mine["asset"], mine["partition"]) == (run_id, "daily_thing", "2013-01-02")
    assert mine["message"] == "scored day password=***" and mine["level"] == "INFO" and mine["job"] == "__ephemeral_asset_job__"
    assert {"STEP_START", "STEP_SUCCESS"} <= {line.get("event_type") for line in lines}
    assert "opensesame" not in "".join(json.dumps(line) for line in lines)


class _SentryIntake(BaseHTTPRequestHandler):
    received: list[bytes] = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.headers.get("content-encoding") == "gzip":
            import gzip

            body = gzip.decompress(body)
        _SentryIntake.received.append(body)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_sentry_reports_scrubbed_errors_only_when_a_dsn_is_set(tmp_path):
    """A real sentry-sdk client posting envelopes to a local HTTP intake, in a child process of its own."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SentryIntake)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    child = (
        "import sentry_sdk\n"
        "from infra import structured_logs\n"
        "started = structured_logs.init_sentry('test')\n"
        "print('started' if started else 'off')\n"
        "try:\n"
        "    raise RuntimeError('registry refused token=abc123secret at http://u:pw-9876@mlflow:5000')\n"
        "except RuntimeError as error:\n"
        "    sentry_sdk.capture_exception(error)\n"
        "sentry_sdk.flush(10)\n"
    )
    try:
        env = {k: v for k, v in os.environ.items() if k != "SENTRY_DSN"}
        off = subprocess.run([sys.executable, "-c", child], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert off.stdout.strip() == "off" and _SentryIntake.received == []
        dsn = f"http://publickey@127.0.0.1:{server.server_port}/1"
        on = subprocess.run([sys.executable, "-c", child], cwd=ROOT, env={**env, "SENTRY_DSN": dsn},
                            capture_output=True, text=True, timeout=60)
        assert on.stdout.strip() == "started", on.stderr
    finally:
        server.shutdown()
    sent = b"".join(_SentryIntake.received).decode()
    assert "registry refused token=***" in sent and "RuntimeError" in sent
    assert "abc123secret" not in sent and "pw-9876" not in sent


@pytest.fixture(scope="module")
def model_tag(tmp_path_factory):
    unit_dir, _ = train_small_unit(january_features(6), tmp_path_factory.mktemp("unit"))
    return store_model(unit_dir, "7")


@pytest.mark.slow
def test_served_requests_carry_ids_and_each_batch_is_audited_without_the_token(model_tag, tmp_path, monkeypatch):
    import httpx

    from serving.schema import records_from_features

    flights = records_from_features(january_features(2).head(4))
    env = serve_env(model_tag, tmp_path / "predictions", SERVICE_ACCESS_LOG="true")
    log = tmp_path / "server.log"
    with served(env, log) as (url, _):
        with httpx.Client(base_url=url, timeout=30) as client:
            given = client.post("/predict", json={"flights": flights}, headers={**AUTH, "X-Request-ID": "order-17"})
            made = client.post("/predict", json={"flights": flights[:1]}, headers=AUTH)
            refused = client.post("/predict", json={"flights": flights}, headers={"X-Request-ID": "x" * 200})
    assert given.status_code == made.status_code == 200 and refused.status_code == 401
    assert given.headers["x-request-id"] == "order-17"
    generated = made.headers["x-request-id"]
    assert len(generated) == 32 and len(refused.headers["x-request-id"]) == 32  # a 200-character id is replaced

    lines = _json_lines(log.read_text())
    access = {line.get("request_id"): line for line in lines if line["logger"] == "bentoml.flight_delay.access"}
    assert access["order-17"]["status"] == 200 and access["order-17"]["path"] == "/predict"
    assert access[generated]["caller"] == audit.token_id(TOKEN)
    assert access[refused.headers["x-request-id"]]["status"] == 401
    assert any(line["logger"] == "bentoml.flight_delay" and "unit verified" in line["message"] for line in lines)

    records = audit.open_audit_log().records(audit.BATCH_SERVED)
    assert [(r["request_id"], r["rows"]) for r in records] == [("order-17", 4), (generated, 1)]
    by_request = {r["request_id"]: r for r in records}
    assert by_request["order-17"]["prediction_ids"] == [p["request_id"] for p in given.json()]
    assert {r["token_id"] for r in records} == {audit.token_id(TOKEN)}
    assert {r["model_version"] for r in records} == {"7"}
    stored = b"".join(Path(p).read_bytes() for p in Path(os.environ["AUDIT_URL"]).rglob("*.jsonl"))
    assert TOKEN.encode() not in stored and TOKEN not in log.read_text()
    assert b"distance" not in stored  # no payload in the audit log
