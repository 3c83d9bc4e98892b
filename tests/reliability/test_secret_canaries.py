"""Secret canaries: a distinctive value in every secret, a small chain and a failure, then zero hits anywhere.

Searched: the Dagster instance (event log with metadata, run storage, compute logs: every file under
DAGSTER_HOME, SQLite included), the MLflow server's store (database and artifacts), the lake's
objects on the S3 server, the alerts the webhook received.
"""

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import pytest

from tests.servers import mlflow_server, moto_server, webhook_receiver

pytestmark = pytest.mark.slow
BUCKET = "canary-lake"
DAYS = ("2013-01-01", "2013-01-14")
CANARIES = {
    "MLFLOW_TRACKING_URI": "mlflowpw-CANARY-71b3",
    "ALERT_WEBHOOK_URL": "hookpath-CANARY-52ac",
    "ALERT_WEBHOOK_TOKEN": "hooktoken-CANARY-9e0d",
    "SERVICE_API_TOKEN": "servicetoken-CANARY-3f6e",
    "AWS_SECRET_ACCESS_KEY": "awssecret-CANARY-c4d8",
}


@pytest.fixture
def hook():
    with webhook_receiver("") as (url, received):
        yield url, received


def _hits(data: bytes, where: str) -> list[str]:
    return [f"{where}: {name}" for name, canary in CANARIES.items() if canary.encode() in data]


def _scan_tree(root: Path) -> list[str]:
    return [hit for path in root.rglob("*") if path.is_file() for hit in _hits(path.read_bytes(), str(path))]


def test_no_secret_reaches_the_instance_the_registry_the_lake_or_an_alert(tmp_path, monkeypatch, hook):
    from pipelines.definitions import build_definitions
    from pipelines.replay import replay
    from pipelines.runner import run_job_over_range
    from resources import lake_storage_from_env, resources_from_env
    from sensors.alerting import run_failure_alert

    hook_base, received = hook
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((Path(__file__).parents[2] / "deploy" / "dagster-local.yaml").read_text())
    for name, value in {"AWS_ACCESS_KEY_ID": "canary-key-id", "AWS_SECRET_ACCESS_KEY": CANARIES["AWS_SECRET_ACCESS_KEY"],
                        "AWS_DEFAULT_REGION": "us-east-1", "DAGSTER_HOME": str(home), "DATA_DIR": str(tmp_path / "data"),
                        "SERVICE_API_TOKEN": CANARIES["SERVICE_API_TOKEN"],
                        "ALERT_WEBHOOK_URL": f"{hook_base}/hook/{CANARIES['ALERT_WEBHOOK_URL']}"
                                             f"?token={CANARIES['ALERT_WEBHOOK_TOKEN']}"}.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "moto").mkdir()
    with moto_server(tmp_path / "moto") as s3, mlflow_server(tmp_path / "mlflow") as tracking:
        monkeypatch.setenv("AWS_ENDPOINT_URL", s3)
        monkeypatch.setenv("LAKE_URL", f"s3://{BUCKET}/lake")
        monkeypatch.setenv("MLFLOW_TRACKING_URI",
                           tracking.replace("http://", f"http://canary:{CANARIES['MLFLOW_TRACKING_URI']}@"))
        storage = lake_storage_from_env()
        storage.s3_client().create_bucket(Bucket=BUCKET)
        replay(storage, *(dt.date.fromisoformat(d) for d in DAYS))
        instance = dg.DagsterInstance.get()
        defs = build_definitions()
        assert defs.resources["registry"].tracking_uri == dg.EnvVar("MLFLOW_TRACKING_URI"), "bound by name"
        for job in ("ingest_job", "features_job"):
            assert run_job_over_range(job, *DAYS, instance, defs=defs).success, job
        training = defs.resolve_job_def("training_job")
        result = training.execute_in_process(
            instance=instance, raise_on_error=False,
            asset_selection=[dg.AssetKey(k) for k in ("training_set", "delay_model", "champion_model")],
            run_config={"ops": {"delay_model": {"config": {"epochs": 2}}}},
        )
        # Registered in MLflow either way; two epochs may fail a blocking check (one more failure to search).
        assert dg.AssetKey("delay_model") in {e.asset_key for e in result.get_asset_materialization_events()}

        # A failure that involves a secret: the registry unreachable at a URL with credentials (MLflow's
        # own HTTP retries off, or each step attempt waits minutes for a port that never opens).
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://canary:{CANARIES['MLFLOW_TRACKING_URI']}@127.0.0.1:9")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
        failing = build_definitions().resolve_job_def("training_job").execute_in_process(
            instance=instance, raise_on_error=False, asset_selection=[dg.AssetKey("champion_model")],
        )
        assert not failing.success
        failure = next(e for e in failing.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
        sensor_context = dg.build_run_status_sensor_context(
            sensor_name="run_failure_alert", dagster_instance=instance, dagster_run=failing.dagster_run,
            dagster_event=failure, resources={"alerts": resources_from_env()["alerts"]},
        ).for_run_failure()
        run_failure_alert(sensor_context)
        assert len(received) == 1, "the alert was delivered"

        hits = []
        for record in instance.get_run_records():
            for entry in instance.all_logs(record.dagster_run.run_id):
                hits += _hits(dg.serialize_value(entry).encode(), f"event log of run {record.dagster_run.run_id[:8]}")
            hits += _hits(dg.serialize_value(record.dagster_run).encode(), "run record")
        hits += _scan_tree(home)
        hits += _scan_tree(tmp_path / "mlflow")
        hits += _scan_tree(tmp_path / "data")
        for obj in storage.list(""):
            hits += _hits(storage.read_bytes(obj.key), f"lake object {obj.key}")
        for body in received:
            hits += _hits(body, "alert")
            assert json.loads(body)["text"]
    assert not hits, "secrets leaked:\n" + "\n".join(sorted(set(hits)))
