"""The production stack on one machine, driven as a user would: through the webserver's GraphQL API.

One stack for the module (``make stack-up``'s services on free ports, fresh Postgres databases), the
scenarios in order: ingestion over a range; features with the code server killed mid-run (the run is
reported failed, the instance's retry completes it); training with the code location reloaded
mid-run (champion, Bento); the landing sensor on a new file and across a daemon restart; the Bento
export; ``down`` leaving no process. What a scenario stores is checked where it must be: Dagster's
and MLflow's Postgres tables queried directly, objects in S3 with their server-side encryption.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from pipelines.stack import LOCATION_NAME, REPOSITORY_NAME, Stack, StackConfig, graphql
from tests.servers import wait_until

pytestmark = pytest.mark.slow

FIRST, LAST = "2013-01-01", "2013-01-21"
NEW_DAY = dt.date(2013, 1, 22)
SENSOR_INTERVAL_S = 5
#: Run monitoring and the orphaned-run sensor tick every few seconds here; production keeps its 15-30 s.
RUN_MONITORING = {"poll_interval_seconds": 5}
PAUSED_SENSORS = ("landing_zone_sensor", "automation_sensor")


@dataclass
class Live:
    stack: Stack
    client: object  # dagster_graphql.DagsterGraphQLClient
    s3: object  # boto3 S3 client
    instance: dg.DagsterInstance  # the stack's instance, opened from its dagster.yaml, to read events
    dagster_db: str
    mlflow_db: str
    postgres: dict

    @property
    def url(self) -> str:
        return self.stack.config.webserver_url

    def rows(self, database: str, query: str, params: tuple = ()) -> list[tuple]:
        import psycopg2

        from infra import settings

        with psycopg2.connect(**self.postgres, password=settings.postgres().password.get_secret_value(), dbname=database) as connection:
            with connection.cursor() as cursor:
                cursor.execute(query, params)
                return cursor.fetchall()

    def objects(self, prefix: str) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.stack.config.bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def encryption(self, key: str) -> str | None:
        return self.s3.head_object(Bucket=self.stack.config.bucket, Key=key).get("ServerSideEncryption")


@pytest.fixture(scope="module")
def live(postgres_server, tmp_path_factory):
    import boto3
    from dagster_graphql import DagsterGraphQLClient

    from infra import settings
    from resources.processes import free_port
    from tests.servers import fresh_postgres_databases

    root = tmp_path_factory.mktemp("stack")
    with fresh_postgres_databases(postgres_server, "dagster", "mlflow") as (dagster_db, mlflow_db), \
            pytest.MonkeyPatch.context() as env:
        config = StackConfig(
            root=root, s3_port=free_port(), mlflow_port=free_port(), code_server_port=free_port(),
            webserver_port=free_port(), dagster_db=dagster_db, mlflow_db=mlflow_db,
            sensor_interval_s=SENSOR_INTERVAL_S, instance_overrides={"run_monitoring": RUN_MONITORING},
        )
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_DEFAULT_REGION": "us-east-1"}.items():
            env.setenv(name, value)
        stack = Stack(config)
        instance = None
        try:
            started = time.perf_counter()
            stack.up()
            print(f"stack up in {time.perf_counter() - started:.1f} s")
            for name, value in stack.services["daemon"].env.items():  # the instance's variables, for this process
                env.setenv(name, value)
            env.setenv("DAGSTER_PG_PASSWORD", settings.postgres().password.get_secret_value())
            instance = dg.DagsterInstance.from_config(str(config.dagster_home))
            yield Live(
                stack=stack,
                client=DagsterGraphQLClient(config.host, port_number=config.webserver_port, timeout=120),
                s3=boto3.client("s3", endpoint_url=config.s3_endpoint),
                instance=instance, dagster_db=dagster_db, mlflow_db=mlflow_db, postgres=postgres_server,
            )
        finally:
            if instance is not None:
                instance.dispose()
            stack.down()


def _lake(live: Live):
    from infra.settings import LakeSettings
    from resources.storage import LakeStorage

    config = live.stack.config
    return LakeStorage.from_settings(LakeSettings(url=config.lake_url, endpoint_url=config.s3_endpoint, sse="AES256"))


def _launch(live: Live, job: str, tags: dict | None = None) -> str:
    return live.client.submit_job_execution(job, repository_location_name=LOCATION_NAME,
                                           repository_name=REPOSITORY_NAME, tags=tags)


def _wait(predicate, what: str, live: Live, timeout_s: float):
    def logs() -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in sorted(live.stack.log_dir.glob("*.log")))

    return wait_until(predicate, what, timeout_s, diagnostics=logs, interval_s=0.5)


def _finished(live: Live, run_id: str, timeout_s: float = 300) -> dg.DagsterRunStatus:
    finished = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
    return _wait(lambda: (s := live.client.get_run_status(run_id)) in finished and s, f"run {run_id} finishes",
                 live, timeout_s)


def _runs(live: Live, job: str) -> list[dict]:
    query = """query Runs($filter: RunsFilter) { runsOrError(filter: $filter) { __typename
                 ... on Runs { results { runId status parentRunId tags { key value } } } } }"""
    results = graphql(live.url, query, {"filter": {"pipelineName": job}})["runsOrError"]["results"]
    return [{**r, "tags": {t["key"]: t["value"] for t in r["tags"]}} for r in results]


def _sensor_selector(name: str) -> dict:
    return {"repositoryLocationName": LOCATION_NAME, "repositoryName": REPOSITORY_NAME, "sensorName": name}


def _sensor(live: Live, name: str) -> dict:
    query = """query Sensor($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) { __typename
                 ... on Sensor { sensorState { id status typeSpecificData { ... on SensorData { lastCursor } }
                 ticks(limit: 10) { status timestamp cursor runIds } } } ... on PythonError { message } } }"""
    answer = graphql(live.url, query, {"selector": _sensor_selector(name)})["sensorOrError"]
    assert "sensorState" in answer, answer
    return answer["sensorState"]


def _set_sensor(live: Live, name: str, running: bool) -> None:
    """Start or stop a sensor as the UI does, until its stored state says so.

    A tick in flight when the mutation lands writes back the state it read at its start (RUNNING)
    when it ends, as the daemon does for any sensor: the mutation is sent again until it holds,
    as a person in the UI would press the toggle again. The webserver can also answer the mutation
    with a 500 while the daemon writes the same sensor's state (seen once in CI under load): that too
    is pressed again."""
    import urllib.error

    want = "RUNNING" if running else "STOPPED"

    def applied() -> bool:
        try:
            return toggled()
        except urllib.error.HTTPError as error:
            if error.code < 500:
                raise
            time.sleep(1)
            return False

    def toggled() -> bool:
        if running:
            mutation = """mutation Start($selector: SensorSelector!) { startSensor(sensorSelector: $selector) {
                            __typename ... on Sensor { sensorState { status } } ... on PythonError { message } } }"""
            answer = graphql(live.url, mutation, {"selector": _sensor_selector(name)})["startSensor"]
        else:
            mutation = """mutation Stop($id: String!) { stopSensor(id: $id) { __typename
                            ... on StopSensorMutationResult { instigationState { status } } ... on PythonError { message } } }"""
            answer = graphql(live.url, mutation, {"id": _sensor(live, name)["id"]})["stopSensor"]
        assert "PythonError" not in answer["__typename"], answer
        time.sleep(1)  # a tick in flight ends and writes its state, or has none to write
        return _sensor(live, name)["status"] == want

    _wait(applied, f"{name} {want}", live, 60)


def _worker_pid(live: Live, run_id: str) -> int | None:
    from sensors.orphaned_runs import worker_process

    worker = worker_process(live.instance, run_id)
    return worker[0] if worker else None


def _started_worker(live: Live, run_id: str) -> int | None:
    """The run worker's pid once the run is STARTED (its worker logs its pid while the run is still STARTING)."""
    if live.client.get_run_status(run_id) != dg.DagsterRunStatus.STARTED:
        return None
    return _worker_pid(live, run_id)


def _all_encrypted(live: Live, prefix: str) -> list[str]:
    keys = live.objects(prefix)
    assert keys, f"nothing under s3://{live.stack.config.bucket}/{prefix}"
    unencrypted = [k for k in keys if live.encryption(k) != "AES256"]
    assert not unencrypted, f"objects without SSE: {unencrypted[:5]}"
    return keys


def test_ingestion_over_a_range_runs_on_postgres_with_compute_logs_in_s3(live):
    from pipelines.partition_ranges import range_tags
    from pipelines.replay import replay

    for name in PAUSED_SENSORS:  # a user backfilling by hand pauses the automation that would race them
        _set_sensor(live, name, running=False)
    replay(_lake(live), dt.date.fromisoformat(FIRST), dt.date.fromisoformat(LAST))

    run_id = _launch(live, "ingest_job", tags=range_tags(FIRST, LAST))
    assert _finished(live, run_id) == dg.DagsterRunStatus.SUCCESS

    assert live.rows(live.dagster_db, "SELECT pipeline_name, status FROM runs WHERE run_id = %s", (run_id,)) == [
        ("ingest_job", "SUCCESS")]
    materialized = live.rows(live.dagster_db, "SELECT count(*) FROM event_logs WHERE run_id = %s AND "
                             "dagster_event_type = 'ASSET_MATERIALIZATION'", (run_id,))[0][0]
    assert materialized >= 2 * 21, "raw_flights and raw_weather for every day"
    assert not list(live.stack.config.dagster_home.rglob("*.db")), "no SQLite storage beside Postgres"
    _all_encrypted(live, "dagster/compute-logs/")
    _all_encrypted(live, "warehouse/raw_flights/")


def test_a_code_server_killed_mid_run_is_failed_by_run_monitoring_and_retried(live):
    from pipelines.partition_ranges import range_tags
    from resources.processes import process_alive

    run_id = _launch(live, "features_job", tags=range_tags(FIRST, LAST))
    worker = _wait(lambda: _started_worker(live, run_id), "the features run starts", live, 120)
    group = live.stack.state()["user-code"]["pid"]
    os.killpg(group, signal.SIGKILL)  # the code server's container dies, and its run workers with it
    try:
        _wait(lambda: not process_alive(worker), "the run worker dies with its code server", live, 10)
        status = live.client.get_run_status(run_id)
        assert status == dg.DagsterRunStatus.STARTED, [e.message for e in live.instance.all_logs(run_id)][-8:]
    finally:
        live.stack.start("user-code")  # as a restart policy would
    restarted = time.monotonic()
    bound = 6 * SENSOR_INTERVAL_S + 30
    assert _finished(live, run_id, timeout_s=bound) == dg.DagsterRunStatus.FAILURE
    print(f"killed run FAILURE {time.monotonic() - restarted:.1f} s after the code server was back")
    messages = [e.message for e in live.instance.all_logs(run_id) if e.message]
    assert any(f"run worker process {worker} is gone" in m for m in messages), "failed by orphaned_run_sensor"

    retry = _wait(lambda: next((r for r in _runs(live, "features_job") if r["parentRunId"] == run_id), None),
                  "the instance's retry of the killed run", live, 120)
    assert retry["tags"].get("dagster/retry_number") == "1"
    assert _finished(live, retry["runId"]) == dg.DagsterRunStatus.SUCCESS
    days = live.instance.get_materialized_partitions(dg.AssetKey("flight_features"))
    assert len(days) == 21


def test_training_survives_a_code_location_reload_and_moves_the_champion(live):
    from dagster_graphql import ReloadRepositoryLocationStatus

    champion_query = "SELECT version FROM registered_model_aliases WHERE name = 'flight_delay' AND alias = 'champion'"
    assert live.rows(live.mlflow_db, champion_query) == [], "no champion before the first training"
    run_id = _launch(live, "training_job")
    _wait(lambda: _started_worker(live, run_id), "the training run starts", live, 120)
    reload = live.client.reload_repository_location(LOCATION_NAME)
    assert reload.status == ReloadRepositoryLocationStatus.SUCCESS, reload.message
    assert _finished(live, run_id, timeout_s=600) == dg.DagsterRunStatus.SUCCESS

    assert live.rows(live.mlflow_db, champion_query) == [(1,)]
    versions = live.rows(live.mlflow_db, "SELECT version, run_id FROM model_versions WHERE name = 'flight_delay'")
    mlflow_runs = {r[0] for r in live.rows(live.mlflow_db, "SELECT run_uuid FROM runs WHERE status = 'FINISHED'")}
    assert len(versions) == 1 and versions[0][1] in mlflow_runs
    _all_encrypted(live, "mlflow-artifacts/")
    assert live.rows(live.dagster_db, "SELECT status FROM runs WHERE run_id = %s", (run_id,)) == [("SUCCESS",)]
    bento = live.instance.get_latest_materialization_event(dg.AssetKey("bento"))
    assert bento is not None and bento.run_id == run_id


def test_verified_bento_is_exported_to_s3(live):
    """``bento_release`` put the verified Bento's archive under ``BENTO_EXPORT_URL``, encrypted."""
    exported = [k for k in live.objects("bentos/") if k.endswith(".bento")]
    assert exported, f"no .bento under {live.stack.config.bento_export_url}"
    assert all(live.encryption(k) == "AES256" for k in exported)


def _new_planes_version(storage) -> None:
    """Rewrite landing/reference/planes.csv with one aircraft's seat count changed (a registry update)."""
    import io

    import pandas as pd

    from ml.landing import reference_key

    frame = pd.read_csv(io.BytesIO(storage.read_bytes(reference_key("planes"))), dtype=str, keep_default_na=False)
    frame.loc[frame.index[0], "seats"] = str(int(frame.loc[frame.index[0], "seats"]) + 1)
    storage.write_bytes(reference_key("planes"), frame.to_csv(index=False).encode())


def test_the_landing_sensor_ingests_new_files_and_reference_tables_and_its_cursor_survives_a_daemon_restart(live):
    """The daemon alone: a new day's files and a new planes.csv each get their run, no `make run` involved."""
    from pipelines.replay import replay

    ingest_runs = len(_runs(live, "ingest_job"))
    started = time.time()
    _set_sensor(live, "landing_zone_sensor", running=True)

    def tick_after(moment: float):
        ticks = _sensor(live, "landing_zone_sensor")["ticks"]
        return next((t for t in ticks if t["timestamp"] > moment and t["status"] in {"SKIPPED", "SUCCESS"}), None)

    first = _wait(lambda: tick_after(started), "a landing sensor tick", live, 6 * SENSOR_INTERVAL_S)
    assert first["status"] == "SKIPPED" and len(_runs(live, "ingest_job")) == ingest_runs, "ingested files: no rerun"

    replay(_lake(live), NEW_DAY, NEW_DAY, with_reference=False)
    expected = {f"landing/{d}/date={NEW_DAY}.csv" for d in ("flights", "weather")}
    new = _wait(lambda: (runs := [r for r in _runs(live, "ingest_job") if r["tags"].get("landing/key") in expected])
                and len(runs) == 2 and runs, "the sensor's runs for the new day", live, 12 * SENSOR_INTERVAL_S)
    assert {r["tags"]["landing/key"] for r in new} == expected
    assert all(_finished(live, r["runId"]) == dg.DagsterRunStatus.SUCCESS for r in new)

    _new_planes_version(_lake(live))
    planes = _wait(lambda: [r for r in _runs(live, "ingest_job") if r["tags"].get("landing/key") == "landing/reference/planes.csv"],
                   "the sensor's run for the new planes.csv", live, 12 * SENSOR_INTERVAL_S)
    assert len(planes) == 1 and _finished(live, planes[0]["runId"]) == dg.DagsterRunStatus.SUCCESS

    cursor = _sensor(live, "landing_zone_sensor")["typeSpecificData"]["lastCursor"]
    assert cursor and str(NEW_DAY) in cursor
    stored = live.rows(live.dagster_db, "SELECT instigator_body FROM instigators WHERE instigator_type = 'SENSOR'")
    assert any("landing_zone_sensor" in body and str(NEW_DAY) in body for (body,) in stored), "its cursor is in Postgres"
    live.stack.restart("daemon")
    restarted = time.time()
    after = _wait(lambda: tick_after(restarted), "a landing sensor tick after the daemon restart", live,
                  12 * SENSOR_INTERVAL_S)
    assert after["status"] == "SKIPPED"
    assert _sensor(live, "landing_zone_sensor")["typeSpecificData"]["lastCursor"] == cursor
    assert len(_runs(live, "ingest_job")) == ingest_runs + 3, "no file requested again after the restart"


def test_down_stops_every_process_the_stack_started(live):
    from resources.processes import group_members, process_alive

    state = live.stack.state()
    assert set(state) == set(live.stack.services)
    processes = {pid for entry in state.values() for pid in [entry["pid"], *group_members(entry["pid"])]}
    assert len(processes) > len(state), "services run below their guards"
    live.instance.dispose()
    live.stack.down()
    assert not [pid for pid in processes if process_alive(pid)]
    assert not live.stack.state_path.exists()
    assert Path(live.stack.log_dir / "daemon.log").exists()
