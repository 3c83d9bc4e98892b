"""``make demo``: replay 2013 into the landing zone with the Dagster daemon running, and watch the loop act.

1. Bootstrap (once): the first weeks of 2013 go through the chain in process → a champion and its Bento.
2. ``dagster dev`` (webserver + daemon) starts on this instance; the Bento is served on 127.0.0.1.
3. Day by day: the day's files land → landing_zone_sensor ingests them → automation builds the
   day's features and batch predictions → the day's flights are sent to the service as traffic →
   the day's monitoring run is submitted (the daily schedule's part, in replayed time) →
   a failed drift or performance check → retrain_on_drift_sensor → training_job → new champion
   and Bento → the service is redeployed on it.
4. A timeline: day, drift share, realised AUC, runs the daemon launched, champion and Bento; then the
   loop's counts (docs/retraining-policy.md): retrainings attempted, promotions, failed runs, alerts sent.
   Unless ``ALERT_WEBHOOK_URL`` is set, the demo receives the alerts itself (a local webhook) to count them.

Everything stays under ``--data-dir`` (default ``data/demo``): its lake, MLflow, BentoML home and
Dagster instance. ``--fresh`` starts over.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def configure_environment(data_dir: Path, cooldown_s: int, sensor_interval_s: int) -> None:
    """Point every resource (and the processes started later) at the demo's own folder."""
    os.environ["DATA_DIR"] = str(data_dir)
    os.environ["DAGSTER_HOME"] = str(data_dir / "dagster_home")
    os.environ.pop("LAKE_URL", None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ["BENTOML_HOME"] = str(data_dir / "bentoml")
    os.environ["PREDICTION_LOG_URL"] = str(data_dir / "lake" / "predictions")
    os.environ["RETRAIN_COOLDOWN_S"] = str(cooldown_s)
    os.environ["SENSOR_INTERVAL_S"] = str(sensor_interval_s)
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    home = data_dir / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    config = (PROJECT_ROOT / "deploy" / "dagster-local.yaml").read_text()
    (home / "dagster.yaml").write_text(config)


def bootstrap(first: dt.date, last: dt.date) -> None:
    """Ingest, featurise and train on [first, last] in process, unless a champion exists."""
    from pipelines.replay import replay
    from pipelines.runner import instance_from_env, run_job_over_range
    from resources import lake_storage_from_env, mlflow_registry_from_env

    if mlflow_registry_from_env().champion_version() is not None:
        print("bootstrap: a champion exists already")
        return
    replay(lake_storage_from_env(), first, last)
    instance = instance_from_env()
    for job in ("ingest_job", "features_job", "training_job"):
        report = run_job_over_range(job, first.isoformat(), last.isoformat(), instance)
        print(f"bootstrap {job}: {'SUCCESS' if report.success else 'FAILURE'} in {report.seconds:.0f} s")


@contextlib.contextmanager
def dagster_dev(log: Path):
    """``dagster dev`` (webserver + daemon) on a free port; yield a GraphQL client."""
    from dagster_graphql import DagsterGraphQLClient

    from resources.processes import free_port, running_server

    port = free_port()
    command = [str(Path(sys.executable).parent / "dagster"), "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"),
               "-h", "127.0.0.1", "-p", str(port)]
    with running_server(command, f"http://127.0.0.1:{port}/server_info", log, timeout_s=180, cwd=PROJECT_ROOT):
        yield DagsterGraphQLClient("127.0.0.1", port_number=port)


@contextlib.contextmanager
def served_bento(bento_tag: str, log: Path):
    """The verified Bento (the `bento` materialization's tag) behind a one-off token; yield a ``ServedBento``."""
    from resources import resources_from_env

    with resources_from_env()["bentos"].serve(bento_tag, log) as served:
        yield served


@contextlib.contextmanager
def alert_sink():
    """A local webhook for ``ALERT_WEBHOOK_URL`` (set before ``dagster dev`` starts); yield the payloads it received.

    Nothing when the variable is set already: the alerts go where the operator said, uncounted (None).
    """
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    if os.environ.get("ALERT_WEBHOOK_URL"):
        yield None
        return
    received: list[dict] = []

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with contextlib.suppress(ValueError):
                received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    os.environ["ALERT_WEBHOOK_URL"] = f"http://127.0.0.1:{server.server_address[1]}/demo-alerts"
    try:
        yield received
    finally:
        os.environ.pop("ALERT_WEBHOOK_URL", None)
        server.shutdown()
        server.server_close()


@dataclass
class LoopCounts:
    """What the retraining loop did over the replayed days (runs created after ``since``)."""

    retrains_attempted: int
    promotions: int
    not_promoted: int
    failed_runs: int
    alerts: dict[str, int] | None
    """Alerts received by severity (``error``: a failed run; ``warning``: the retraining backoff); None: not counted."""

    def render(self) -> str:
        alerts = ("not counted (ALERT_WEBHOOK_URL is yours)" if self.alerts is None else
                  f"{sum(self.alerts.values())} ({', '.join(f'{k} {v}' for k, v in sorted(self.alerts.items())) or 'none'})")
        return (f"retrains attempted {self.retrains_attempted}, promotions {self.promotions}, "
                f"not promoted {self.not_promoted}, failed runs {self.failed_runs}, alerts sent {alerts}")


def loop_counts(instance, since: float, alerts: list[dict] | None) -> LoopCounts:
    """Count from the instance: training runs, promotions (champion_model materializations), failures."""
    import dagster as dg

    from assets.run_tags import TrainingOutcome, TrainingRunTags

    records = [r for r in instance.get_run_records() if r.create_timestamp.timestamp() >= since]
    training = [r for r in records if r.dagster_run.job_name == "training_job"]
    promotions = sum(
        1 for r in training
        for e in instance.get_records_for_run(r.dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
        if e.asset_key == dg.AssetKey("champion_model")
    )
    outcomes = [TrainingRunTags.parse(r.dagster_run.tags) for r in training]
    not_promoted = sum(1 for o in outcomes if o is not None and o.outcome == TrainingOutcome.NOT_PROMOTED)
    failed = sum(1 for r in records if r.dagster_run.status == dg.DagsterRunStatus.FAILURE)
    by_severity: dict[str, int] | None = None
    if alerts is not None:
        by_severity = {}
        for alert in alerts:
            severity = str(alert.get("severity", "error"))
            by_severity[severity] = by_severity.get(severity, 0) + 1
    return LoopCounts(len(training), promotions, not_promoted, failed, by_severity)


def wait_for(predicate, timeout_s: float, what: str, every_s: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value is not None and value is not False:
            return value
        time.sleep(every_s)
    raise TimeoutError(f"waited {timeout_s:.0f} s for {what}")


def send_traffic(served, features, chunk: int = 50) -> int:
    """The day's flights, as a booking system would ask: requests of ``chunk`` flights."""
    import httpx

    from serving.schema import records_from_features

    records = records_from_features(features)
    with httpx.Client(base_url=served.url, headers=served.headers, timeout=30) as client:
        for start in range(0, len(records), chunk):
            client.post("/predict", json={"flights": records[start : start + chunk]}).raise_for_status()
    return len(records)


@dataclass
class DayLine:
    day: str
    flights: int = 0
    drift_share: str = "-"
    roc_auc: str = "-"
    launched: list[str] = field(default_factory=list)
    champion: str = "-"
    bento: str = "-"

    def render(self) -> str:
        return (f"{self.day}  flights {self.flights:>4}  drift {self.drift_share:>6}  AUC {self.roc_auc:>6}  "
                f"champion v{self.champion:<3} bento {self.bento:<34} {', '.join(self.launched) or '-'}")


def _metadata(instance, asset: str, day: str) -> dict:
    import dagster as dg

    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[day]), limit=1
    ).records
    if not records:
        return {}
    return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}


def _latest_bento(instance) -> tuple[str, str]:
    import dagster as dg

    event = instance.get_latest_materialization_event(dg.AssetKey("bento"))
    if event is None:
        return "-", "-"
    md = event.asset_materialization.metadata
    return str(md["bento_tag"].value), str(md["model_version"].value)


def replay_days(days: list[dt.date], client, instance, storage, registry, logs: Path, settle_s: float) -> list[DayLine]:
    """The loop, one replayed day at a time; prints each day's line as it completes."""
    import dagster as dg

    from pipelines.replay import replay
    from serving.prediction_log import read_prediction_log

    timeline: list[DayLine] = []
    seen_runs = {r.dagster_run.run_id for r in instance.get_run_records()}
    bento_tag, _ = _latest_bento(instance)
    stack = contextlib.ExitStack()
    served = stack.enter_context(served_bento(bento_tag, logs / "serve.log"))
    try:
        for day in days:
            key = day.isoformat()
            line = DayLine(key)
            replay(storage, day, day)
            features = wait_for(lambda: _features_or_held_back(instance, storage, key), 600,
                                f"flight_features {key} (sensor → ingest → automation)")
            if isinstance(features, str):
                line.drift_share = features
                timeline.append(line)
                print(line.render(), flush=True)
                continue
            line.flights = send_traffic(served, features)
            wait_for(lambda: len(read_prediction_log(os.environ["PREDICTION_LOG_URL"], [key])) >= line.flights, 60,
                     f"the prediction log of {key}")
            run_id = client.submit_job_execution("monitoring_job", tags={"dagster/partition": key})
            status = wait_for(lambda: _finished(client, run_id), 600, f"monitoring run {run_id[:8]}")
            drift = _metadata(instance, "drift_report", key)
            performance = _metadata(instance, "model_performance", key)
            line.drift_share = str(drift.get("drift_share", status.value.lower()))
            line.roc_auc = str(performance.get("roc_auc", "-"))
            time.sleep(settle_s)  # one sensor tick: a failed check becomes a training run
            training = [r for r in instance.get_run_records(dg.RunsFilter(job_name="training_job"))
                        if r.dagster_run.run_id not in seen_runs]
            if training:
                wait_for(lambda: all(_finished_record(instance, r.dagster_run.run_id) for r in training), 900,
                         "the retraining")
            new_runs = [r for r in instance.get_run_records() if r.dagster_run.run_id not in seen_runs]
            seen_runs |= {r.dagster_run.run_id for r in new_runs}
            line.launched = sorted(
                f"{r.dagster_run.job_name}:{instance.get_run_by_id(r.dagster_run.run_id).status.value.lower()}"
                for r in new_runs if r.dagster_run.job_name != "monitoring_job"
            )
            line.champion = registry.champion_version() or "-"
            latest_tag, _ = _latest_bento(instance)
            line.bento = latest_tag
            if latest_tag != bento_tag:  # deploy: the new Bento replaces the served one
                stack.close()
                stack = contextlib.ExitStack()
                served = stack.enter_context(served_bento(latest_tag, logs / f"serve-{key}.log"))
                bento_tag = latest_tag
            timeline.append(line)
            print(line.render(), flush=True)
    finally:
        stack.close()
    return timeline


def _features_or_held_back(instance, storage, day: str):
    """The day's features; "held back" when a run for them failed (a blocking check); None while waiting."""
    import dagster as dg

    from ml.tables import Table
    from resources.parquet_io import Warehouse

    features = Warehouse(storage).frame(Table.FLIGHT_FEATURES, day)
    if features is not None:
        return features
    failed = instance.get_run_records(
        dg.RunsFilter(tags={"dagster/partition": day}, statuses=[dg.DagsterRunStatus.FAILURE])
    )
    wanted = dg.AssetKey("flight_features")
    if any(wanted in (r.dagster_run.asset_selection or ()) for r in failed):
        return "held back"
    return None


def _finished(client, run_id: str):
    from dagster import DagsterRunStatus

    status = client.get_run_status(run_id)
    return status if status in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED) else None


def _finished_record(instance, run_id: str) -> bool:
    return instance.get_run_by_id(run_id).is_finished


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flightdelay demo", description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=PROJECT_ROOT / "data" / "demo")
    parser.add_argument("--bootstrap-from", type=dt.date.fromisoformat, default=dt.date(2013, 1, 1))
    parser.add_argument("--bootstrap-to", type=dt.date.fromisoformat, default=dt.date(2013, 3, 31))
    # Summer days, densely: the drift gate fires from the first one (a Jan–Mar champion), and a
    # candidate needs recent days in its window to beat the champion on them (sparse replays mostly
    # give candidates that not_worse_than_champion rejects: the gate working, no new champion).
    parser.add_argument("--from", dest="start", type=dt.date.fromisoformat, default=dt.date(2013, 6, 20))
    parser.add_argument("--to", dest="end", type=dt.date.fromisoformat, default=dt.date(2013, 7, 20))
    parser.add_argument("--every", type=int, default=1, help="replay every Nth day (1: every day)")
    parser.add_argument("--cooldown-s", type=int, default=0, help="RETRAIN_COOLDOWN_S for the demo")
    parser.add_argument("--fresh", action="store_true", help="delete the demo's data first")
    args = parser.parse_args(argv)

    data_dir = args.data_dir.resolve()
    if args.fresh and data_dir.exists():
        shutil.rmtree(data_dir)
    configure_environment(data_dir, args.cooldown_s, sensor_interval_s=5)
    bootstrap(args.bootstrap_from, args.bootstrap_to)

    from pipelines.runner import instance_from_env
    from resources import lake_storage_from_env, mlflow_registry_from_env

    days = [args.start + dt.timedelta(days=i) for i in range(0, (args.end - args.start).days + 1, args.every)]
    logs = data_dir / "logs"
    logs.mkdir(exist_ok=True)
    print(f"replaying {len(days)} day(s) from {days[0]} with the daemon running (logs in {logs})")
    instance = instance_from_env()
    since = time.time()
    with alert_sink() as alerts, dagster_dev(logs / "dagster-dev.log") as client:
        timeline = replay_days(days, client, instance, lake_storage_from_env(), mlflow_registry_from_env(), logs,
                               settle_s=12)
        time.sleep(12)  # one more sensor tick: a backoff warning or failure alert of the last day is sent
        counts = loop_counts(instance, since, alerts)
    print("\ntimeline")
    for line in timeline:
        print(line.render())
    print(f"\nthe loop over {len(days)} day(s): {counts.render()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
