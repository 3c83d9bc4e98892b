"""Retry bounds: a flaky S3 is retried exactly as configured; data failures and failed checks never; one alert per failure."""

import contextlib
import datetime as dt
import http.client
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import dagster as dg
import pytest

from assets.ingest import CONTRACT_CHECK, planes, raw_weather
from assets.policies import IO_RETRY
from pipelines.replay import replay
from resources.alerts import AlertWebhook
from resources.storage import LakeStorage
from sensors.alerting import run_failure_alert
from tests.conftest import resources_for
from tests.servers import http_server_in_thread, moto_server, webhook_receiver

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BUCKET = "flaky-lake"
DAY = "2013-01-01"


@contextlib.contextmanager
def flaky_proxy(upstream: str, failures: int):
    """An HTTP proxy in front of ``upstream`` that answers its first ``failures`` requests 503 SlowDown."""
    target = upstream.removeprefix("http://")
    state = {"requests": 0, "refused": 0}
    lock = threading.Lock()

    class Proxy(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                state["requests"] += 1
                refuse = state["refused"] < failures
                state["refused"] += refuse
            if refuse:
                payload = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
                self.send_response(503)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            connection = http.client.HTTPConnection(target, timeout=30)
            connection.request(self.command, self.path, body=body, headers=dict(self.headers))
            response = connection.getresponse()
            data = response.read()
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in {"transfer-encoding", "connection", "content-length"}:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            connection.close()

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        def log_message(self, *args):
            pass

    with http_server_in_thread(Proxy) as port:
        yield f"http://127.0.0.1:{port}", state


@pytest.fixture
def s3_env(tmp_path, monkeypatch):
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "moto").mkdir()
    with moto_server(tmp_path / "moto") as endpoint:
        yield endpoint


_MATERIALIZE = """
import sys
import dagster as dg
from assets.ingest import raw_flights
from resources import io_managers
from resources.storage import LakeStorage

url, day = sys.argv[1], sys.argv[2]
for endpoint in sys.argv[3:]:
    # botocore's own retries off (its max_attempts counts retries): each refused request fails an attempt
    storage = LakeStorage(url=url, endpoint_url=endpoint, region_name="us-east-1", max_attempts=0)
    result = dg.materialize([raw_flights], partition_key=day, instance=dg.DagsterInstance.get(), raise_on_error=False,
                            resources={"storage": storage, **io_managers(storage)})
    print("RESULT", result.run_id, result.success, flush=True)
"""


def _step_events(instance: dg.DagsterInstance, run_id: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in instance.all_logs(run_id):
        if entry.dagster_event is not None:
            counts[entry.dagster_event.event_type_value] = counts.get(entry.dagster_event.event_type_value, 0) + 1
    return counts


@pytest.mark.server  # a moto server
def test_a_flaky_s3_is_retried_exactly_as_configured(s3_env, tmp_path):
    """S3 refuses ``max_retries`` times: the step succeeds on its last attempt; once more, it fails for good."""
    lake = LakeStorage(url=f"s3://{BUCKET}/lake", endpoint_url=s3_env, region_name="us-east-1")
    lake.s3_client().create_bucket(Bucket=BUCKET)
    replay(lake, dt.date.fromisoformat(DAY), dt.date.fromisoformat(DAY))
    home = tmp_path / "dagster_home"
    home.mkdir()
    retries = IO_RETRY.max_retries
    assert retries >= 1, "the shipped policy retries I/O failures"

    with flaky_proxy(s3_env, failures=retries) as (recovers, recovers_state), \
            flaky_proxy(s3_env, failures=retries + 1) as (down, down_state):
        env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(PROJECT_ROOT),
               "STEP_MAX_RETRIES": str(retries), "STEP_RETRY_DELAY_S": "0.2"}
        out = subprocess.run(
            [sys.executable, "-c", _MATERIALIZE, lake.url, DAY, recovers, down],
            env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
        )
    assert out.returncode == 0, out.stderr[-3000:]
    (first_id, first_ok), (second_id, second_ok) = (line.split()[1:] for line in out.stdout.splitlines() if line.startswith("RESULT"))

    with dg.DagsterInstance.from_config(str(home)) as instance:
        recovered, failed = _step_events(instance, first_id), _step_events(instance, second_id)
    assert first_ok == "True" and recovers_state["refused"] == retries
    assert recovered.get("STEP_UP_FOR_RETRY") == retries and recovered.get("STEP_RESTARTED") == retries
    assert recovered.get("STEP_SUCCESS") == 1 and lake.exists(f"warehouse/raw_flights/{DAY}.parquet")

    assert second_ok == "False" and down_state["refused"] == retries + 1
    assert failed.get("STEP_UP_FOR_RETRY") == retries, "retried exactly max_retries times, then given up"
    assert failed.get("STEP_FAILURE") == 1


def _retries_of(result: dg.ExecuteInProcessResult) -> int:
    return sum(1 for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY)


def test_a_data_failure_is_not_retried(lake):
    """No reference file landed: a dg.Failure that says what to do, raised once, whatever the retry policy."""
    result = dg.materialize([planes], resources=resources_for(lake), raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert "replay or upload it" in failure.step_failure_data.error.message
    assert _retries_of(result) == 0


def test_a_failed_blocking_check_is_not_retried(lake):
    """A day whose wind readings are impossible in too many reports: the blocking check fails once, no retry."""
    from tests.conftest import break_wind_readings

    day = dt.date(2013, 2, 13)
    replay(lake, day, day)
    break_wind_readings(lake, day.isoformat(), rows=10)
    result = dg.materialize([raw_weather], partition_key=day.isoformat(), resources=resources_for(lake),
                            raise_on_error=False)
    assert not result.success
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == CONTRACT_CHECK and not evaluation.passed
    assert _retries_of(result) == 0


@dg.asset
def always_broken():
    raise RuntimeError("the lake is on fire")


def broken_job() -> dg.JobDefinition:
    return dg.Definitions(assets=[always_broken], jobs=[dg.define_asset_job("broken_job")]).resolve_job_def("broken_job")


@pytest.mark.server  # runs in child processes (execute_job)
def test_a_run_that_fails_for_good_alerts_once_with_run_retries_on():
    """A failed run the daemon will retry is not alerted; its retry, failing for good, is: one POST in all.

    The retry is the daemon's re-execution from failure (parent/root run ids, ``dagster/retry_number``);
    ``dagster/will_retry`` is set by the instance itself, as for a run whose worker was killed.
    """
    overrides = {"run_retries": {"enabled": True, "max_retries": 1, "retry_on_asset_or_op_failure": True}}
    with dg.instance_for_test(overrides=overrides) as instance, webhook_receiver("/hook/T0KEN") as (url, received):
        def tick(cursor):
            context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"alerts": AlertWebhook(url=url)})
            return run_failure_alert.evaluate_tick(context).cursor

        cursor = tick(None)
        job = dg.reconstructable(broken_job)
        first = dg.execute_job(job, instance=instance, raise_on_error=False)
        cursor = tick(cursor)
        assert instance.get_run_by_id(first.run_id).tags.get("dagster/will_retry") == "true"
        assert received == [], "no alert for a failure that will be retried"

        # The tags the daemon's create_reexecuted_run puts on a retry (they define the run group).
        tags = {"dagster/retry_number": "1", "dagster/parent_run_id": first.run_id, "dagster/root_run_id": first.run_id}
        retry = dg.execute_job(
            job, instance=instance, raise_on_error=False, tags=tags,
            reexecution_options=dg.ReexecutionOptions.from_failure(first.run_id, instance),
        )
        tick(tick(cursor))
        assert instance.get_run_by_id(retry.run_id).tags.get("dagster/will_retry") == "false"
        (alert,) = [json.loads(body) for body in received]
        assert alert["run_id"] == retry.run_id and "on retry 1" in alert["text"]
