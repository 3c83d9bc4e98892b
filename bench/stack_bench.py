"""The one-machine production stack: its start time, the chain through GraphQL vs in process, the sensor storm on Postgres vs SQLite.

    .venv/bin/python bench/stack_bench.py                      # all three
    .venv/bin/python bench/stack_bench.py --parts start,storm

- start: ``Stack.up()`` on fresh Postgres databases, each service to ready, and ``down``.
- chain: replay 2013-01-01..21, then ingest_job, features_job (ranges, one run each) and training_job
  launched through the webserver's GraphQL API, each waited for; against the same three jobs executed
  in process (``pipelines/run_main.py`` style) on a local lake, SQLite instance and MLflow. Per run:
  queued (create → start: the daemon's run queue), running (start → end: the worker's import and the
  steps), and the client's wait beyond that (polling).
- storm: the sensor-storm scenario's shape (tests/reliability/test_sensor_storm.py): 50 landing files,
  ticks of the real ``landing_zone_sensor`` and the runs they request executed with ``dg.materialize``,
  on a SQLite instance and on a Postgres instance: runs per second, end to end.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

FIRST, LAST = "2013-01-01", "2013-01-21"
CHAIN = ("ingest_job", "features_job", "training_job")
POSTGRES = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


@contextlib.contextmanager
def scratch_env(**values: str):
    """Set environment variables for the block; restore them after."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def running_stack(root: Path):
    from pipelines.stack import Stack, StackConfig
    from resources.processes import free_port
    from tests.servers import fresh_postgres_databases

    with fresh_postgres_databases(POSTGRES, "bench_dagster", "bench_mlflow") as (dagster_db, mlflow_db), \
            scratch_env(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1"):
        stack = Stack(StackConfig(root=root, s3_port=free_port(), mlflow_port=free_port(),
                                  code_server_port=free_port(), webserver_port=free_port(),
                                  dagster_db=dagster_db, mlflow_db=mlflow_db, sensor_interval_s=5))
        started = time.perf_counter()
        try:
            stack.up()
            up_s = time.perf_counter() - started
            yield stack, up_s
        finally:
            started = time.perf_counter()
            stack.down()
            print(f"  stack down: {time.perf_counter() - started:.1f} s")


def bench_start(root: Path) -> None:
    with running_stack(root) as (_stack, up_s):
        print(f"stack up (Postgres databases, s3, mlflow, code server, webserver + location loaded, daemon): {up_s:.1f} s")


def _pause_automation(stack) -> None:
    from pipelines.stack import LOCATION_NAME, REPOSITORY_NAME, graphql

    for name in ("landing_zone_sensor", "automation_sensor"):
        selector = {"repositoryLocationName": LOCATION_NAME, "repositoryName": REPOSITORY_NAME, "sensorName": name}
        state = graphql(stack.config.webserver_url,
                        "query S($s: SensorSelector!) { sensorOrError(sensorSelector: $s) { ... on Sensor { sensorState { id } } } }",
                        {"s": selector})["sensorOrError"]["sensorState"]
        graphql(stack.config.webserver_url, "mutation T($id: String!) { stopSensor(id: $id) { __typename } }", {"id": state["id"]})


def bench_chain(root: Path) -> None:
    import dagster as dg
    from dagster_graphql import DagsterGraphQLClient

    from infra.settings import LakeSettings
    from pipelines.partition_ranges import range_tags
    from pipelines.replay import replay
    from pipelines.stack import LOCATION_NAME, REPOSITORY_NAME
    from resources.storage import LakeStorage

    first, last = dt.date.fromisoformat(FIRST), dt.date.fromisoformat(LAST)
    stack_rows = []
    with running_stack(root / "stack") as (stack, _up):
        config = stack.config
        _pause_automation(stack)
        replay(LakeStorage.from_settings(LakeSettings(url=config.lake_url, endpoint_url=config.s3_endpoint)), first, last)
        client = DagsterGraphQLClient(config.host, port_number=config.webserver_port, timeout=120)
        with scratch_env(**stack.services["daemon"].env, DAGSTER_PG_PASSWORD=os.environ.get("DAGSTER_PG_PASSWORD", "")):
            instance = dg.DagsterInstance.from_config(str(config.dagster_home))
            total_started = time.perf_counter()
            for job in CHAIN:
                started = time.perf_counter()
                run_id = client.submit_job_execution(job, repository_location_name=LOCATION_NAME,
                                                     repository_name=REPOSITORY_NAME,
                                                     tags=range_tags(FIRST, LAST) if job != "training_job" else None)
                while not instance.get_run_by_id(run_id).is_finished:
                    time.sleep(0.2)
                wall = time.perf_counter() - started
                record = instance.get_run_record_by_id(run_id)
                queued = record.start_time - record.create_timestamp.timestamp()
                running = record.end_time - record.start_time
                stack_rows.append((job, record.dagster_run.status.value, wall, queued, running))
            stack_total = time.perf_counter() - total_started
            instance.dispose()

    local = root / "local"
    home = local / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(Path(__file__).resolve().parents[1] / "deploy" / "dagster-local.yaml", home / "dagster.yaml")
    with scratch_env(DATA_DIR=str(local / "data"), DAGSTER_HOME=str(home), BENTOML_HOME=str(local / "bentoml")):
        for name in ("LAKE_URL", "MLFLOW_TRACKING_URI", "PREDICTION_LOG_URL", "AWS_ENDPOINT_URL"):
            os.environ.pop(name, None)
        from pipelines.definitions import build_definitions
        from pipelines.runner import run_job_over_range
        from resources import lake_storage_from_env

        replay(lake_storage_from_env(), first, last)
        instance = dg.DagsterInstance.get()
        defs = build_definitions()
        local_rows = []
        total_started = time.perf_counter()
        for job in CHAIN:
            report = run_job_over_range(job, FIRST, LAST, instance, defs=defs)
            local_rows.append((job, "SUCCESS" if report.success else "FAILURE", report.seconds))
        local_total = time.perf_counter() - total_started

    print(f"chain {FIRST}..{LAST}: through GraphQL on the stack {stack_total:.1f} s, in process {local_total:.1f} s"
          f" (ratio {stack_total / local_total:.2f})")
    print(f"  {'job':14} {'stack wall':>10} {'queued':>7} {'running':>8} {'poll':>5} | {'in process':>10}")
    for (job, status, wall, queued, running), (_, local_status, seconds) in zip(stack_rows, local_rows):
        print(f"  {job:14} {wall:9.1f}s {queued:6.1f}s {running:7.1f}s {wall - queued - running:4.1f}s |"
              f" {seconds:9.1f}s  ({status} / {local_status})")


def bench_storm(root: Path) -> None:
    import dagster as dg
    import yaml

    from tests.servers import fresh_postgres_databases

    sqlite_home = root / "sqlite_home"
    sqlite_home.mkdir(parents=True)
    (sqlite_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    results = {"SQLite": _storm(root / "sqlite", dg.DagsterInstance.from_config(str(sqlite_home)))}
    with fresh_postgres_databases(POSTGRES, "bench_storm") as (db,):
        pg_home = root / "pg_home"
        pg_home.mkdir()
        storage = {"postgres": {"postgres_db": {**{"hostname": POSTGRES["host"], "username": POSTGRES["user"],
                                                   "db_name": db, "port": POSTGRES["port"]},
                                                "scheme": "postgresql+psycopg2"}}}
        (pg_home / "dagster.yaml").write_text(yaml.safe_dump({"storage": storage, "telemetry": {"enabled": False}}))
        instance = dg.DagsterInstance.from_config(str(pg_home))
        try:
            results["Postgres"] = _storm(root / "pg", instance)
        finally:
            instance.dispose()
    for name, (runs, seconds) in results.items():
        print(f"sensor storm on {name}: {runs} runs in {seconds:.1f} s = {runs / seconds:.2f} runs/s (ticks + runs)")


def _storm(root: Path, instance) -> tuple[int, float]:
    """50 landing files; the sensor ticks and its requested runs execute until nothing is requested."""
    import dagster as dg

    from assets.ingest import raw_flights, raw_weather
    from ml.landing import landing_key
    from ml.reference_data import daily_csvs
    from resources.storage import LakeStorage
    from sensors.landing_zone import landing_zone_sensor
    from tests.conftest import resources_for

    lake = LakeStorage(url=str(root / "lake"))
    first, last = dt.date(2013, 2, 1), dt.date(2013, 2, 25)
    for dataset in ("flights", "weather"):
        for day, data in daily_csvs(dataset, first, last):
            lake.write_bytes(landing_key(dataset, day.isoformat()), data)
    assets = {"raw_flights": raw_flights, "raw_weather": raw_weather}
    cursor, runs = None, 0
    started = time.perf_counter()
    while True:
        context = dg.build_sensor_context(cursor=cursor, instance=instance, resources={"storage": lake})
        result = landing_zone_sensor(context)
        cursor = context.cursor
        requests = [] if isinstance(result, dg.SkipReason) else list(result)
        if not requests:
            break
        for request in requests:
            asset = assets[request.asset_selection[0].to_user_string()]  # one raw asset per landing file
            dg.materialize([asset], partition_key=request.partition_key, tags=request.tags, instance=instance,
                           resources=resources_for(lake), raise_on_error=False,
                           run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}})
            runs += 1
    return runs, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default="start,chain,storm")
    parts = parser.parse_args().parts.split(",")
    root = Path(tempfile.mkdtemp(prefix="stack-bench-"))
    try:
        if "start" in parts:
            bench_start(root / "start")
        if "chain" in parts:
            bench_chain(root / "chain")
        if "storm" in parts:
            bench_storm(root / "storm")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
