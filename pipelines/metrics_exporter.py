"""The pipeline's metrics for Prometheus, read from the Dagster instance on each scrape.

``python -m pipelines.metrics_exporter`` (``make metrics-exporter``) serves ``/metrics`` on
``METRICS_EXPORTER_HOST``:``METRICS_EXPORTER_PORT`` (127.0.0.1:9464) for the instance at ``DAGSTER_HOME``.
Every value comes from Dagster's event log, run and tick storage: what the assets recorded as
materialization metadata (rows and held-back days per ingested day, drift share, realised ROC AUC,
training time, the champion's version), when each asset and partition was materialized, each
sensor's last tick, and the training job's recent run outcomes. Nothing is pushed and nothing is
cached: a scrape shows the instance as it is, and a scrape that cannot read it fails (``up == 0``).
Why an exporter rather than a pushgateway: docs/monitoring.md.

Times are exported as Unix timestamps (``*_timestamp_seconds``), never as ages: an age is stale the
moment it is written, a timestamp stays true; ``time() - metric`` is the age in PromQL.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import dagster as dg
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from infra import settings
from ml.gates import DRIFT_SHARE_THRESHOLD, PERFORMANCE_AUC_TOLERANCE

logger = logging.getLogger(__name__)

INGESTED_ASSETS = ("raw_flights", "raw_weather")
INGEST_DAYS = 7
"""Ingested and held-back rows are exported for the newest this many days of each ingested asset."""
INGEST_ROWS, INGEST_HELD_BACK = "landing/rows", "landing/held_back"
"""Per-partition metadata of the ingest assets (assets/ingest.py): rows read from the landing file, held back or not."""
TRAINING_JOB = "training_job"
RECENT_RECORDS = 50


@dataclass(frozen=True)
class PartitionValue:
    """A number an asset recorded for one day, and that day."""

    day: str
    value: float


def day_timestamp(day: str) -> float | None:
    """Midnight UTC of a daily partition key (``2013-01-05``); None for a key that is no date."""
    try:
        return dt.datetime.combine(dt.date.fromisoformat(day), dt.time(), dt.timezone.utc).timestamp()
    except ValueError:
        return None


def _number(metadata: dict, key: str) -> float | None:
    entry = metadata.get(key)
    value = getattr(entry, "value", entry)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None  # "not evaluated", "n/a", or missing
    return float(value)


def _records(instance: dg.DagsterInstance, asset: str, partitions: list[str] | None = None, limit: int = RECENT_RECORDS):
    records_filter = dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=partitions)
    return instance.fetch_materializations(records_filter, limit=limit).records


def newest_partition_value(instance: dg.DagsterInstance, asset: str, key: str) -> PartitionValue | None:
    """The numeric ``key`` of the newest day among ``asset``'s recent materializations (re-runs: the latest wins)."""
    best: PartitionValue | None = None
    for record in _records(instance, asset):  # newest first
        materialization = record.asset_materialization
        value = _number(materialization.metadata, key) if materialization else None
        if value is None or record.partition_key is None:
            continue
        if best is None or record.partition_key > best.day:
            best = PartitionValue(record.partition_key, value)
    return best


def latest_metadata(instance: dg.DagsterInstance, asset: str) -> dict:
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    return event.asset_materialization.metadata if event and event.asset_materialization else {}


def ingest_rows(instance: dg.DagsterInstance, asset: str, days: int = INGEST_DAYS) -> dict[str, tuple[float, bool]]:
    """``{day: (rows, held_back)}`` for the newest ``days`` materialized partitions of an ingest asset."""
    materialized = sorted(instance.get_materialized_partitions(dg.AssetKey(asset)))[-days:]
    if not materialized:
        return {}
    out: dict[str, tuple[float, bool]] = {}
    for record in _records(instance, asset, materialized, limit=days * 10):
        metadata = record.asset_materialization.metadata if record.asset_materialization else {}
        rows = _number(metadata, INGEST_ROWS)
        if record.partition_key in out or rows is None:
            continue
        held = metadata.get(INGEST_HELD_BACK)
        out[record.partition_key] = (rows, bool(getattr(held, "value", held)))
    return out


def consecutive_failures(instance: dg.DagsterInstance, job: str = TRAINING_JOB, look_back: int = 20) -> int:
    """How many of ``job``'s newest finished runs failed in a row (0 once one succeeds)."""
    finished = instance.get_run_records(
        dg.RunsFilter(job_name=job, statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]),
        limit=look_back,
    )
    count = 0
    for record in finished:  # newest first
        if record.dagster_run.status != dg.DagsterRunStatus.FAILURE:
            break
        count += 1
    return count


def sensor_last_ticks(instance: dg.DagsterInstance) -> dict[str, float]:
    """``{sensor name: timestamp of its newest tick}`` for every sensor that is not stopped and has ticked.

    A stopped sensor is left out: it is meant not to tick, and its last tick would only grow old.
    """
    out: dict[str, float] = {}
    for state in instance.all_instigator_state():  # enums compared by value: their classes are not public API
        if state.instigator_type.value != "SENSOR" or state.status.value == "STOPPED":
            continue
        ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
        if ticks:
            out[state.instigator_name] = max(out.get(state.instigator_name, 0.0), ticks[0].timestamp)
    return out


def _gauge(name: str, documentation: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=list(labels))


class PipelineCollector(Collector):
    """A Prometheus collector that reads the Dagster instance each time it is scraped."""

    def __init__(self, instance: dg.DagsterInstance):
        self.instance = instance

    def collect(self) -> Iterator[GaugeMetricFamily]:
        instance = self.instance
        yield from self._freshness()

        rows = _gauge("flight_delay_ingest_rows", f"Rows of the landing file per ingested day (newest {INGEST_DAYS} days), "
                      "ingested or held back by the data contract", ["asset", "day", "outcome"])
        held_days = _gauge("flight_delay_ingest_held_back_days", f"Days among the newest {INGEST_DAYS} ingested that the "
                           "data contract held back (a file that could not be read at all has 0 rows but counts here)", ["asset"])
        for asset in INGESTED_ASSETS:
            days = ingest_rows(instance, asset)
            for day, (count, held_back) in sorted(days.items()):
                rows.add_metric([asset, day, "held_back" if held_back else "ingested"], count)
                rows.add_metric([asset, day, "ingested" if held_back else "held_back"], 0.0)
            held_days.add_metric([asset], sum(held for _, held in days.values()))
        yield rows
        yield held_days

        drift = newest_partition_value(instance, "drift_report", "drift_share")
        yield from self._day_value("flight_delay_drift_share_ratio",
                                   "Share of the gate columns drifted on the newest evaluated day (drift_report)", drift)
        gate = _gauge("flight_delay_drift_share_gate_ratio", "Drift share at which the drift check fails (ml/gates.py)")
        gate.add_metric([], DRIFT_SHARE_THRESHOLD)
        yield gate

        auc = newest_partition_value(instance, "model_performance", "roc_auc")
        yield from self._day_value("flight_delay_realised_roc_auc",
                                   "ROC AUC of served predictions against arrived outcomes, newest scored day (model_performance)", auc)
        upper = newest_partition_value(instance, "model_performance", "window_roc_auc_high")
        yield from self._day_value("flight_delay_realised_roc_auc_window_upper",
                                   "Upper bound of the realised ROC AUC's confidence interval over the check's window "
                                   "of days, newest judged day (model_performance)", upper)
        expected = newest_partition_value(instance, "model_performance", "model_test_roc_auc")
        auc_gate = _gauge("flight_delay_realised_roc_auc_gate",
                          "The performance check fails when the window's upper bound is below this: the serving "
                          "model's test ROC AUC minus the tolerance")
        if expected is not None:
            auc_gate.add_metric([], round(expected.value - PERFORMANCE_AUC_TOLERANCE, 4))
        yield auc_gate

        trained = latest_metadata(instance, "delay_model")
        duration = _gauge("flight_delay_training_duration_seconds", "Training time of the newest delay_model run")
        if (seconds := _number(trained, "train_seconds")) is not None:
            duration.add_metric([], seconds)
        yield duration
        yield from self._champion()

        failures = _gauge("flight_delay_training_consecutive_failures",
                          f"Newest {TRAINING_JOB} runs that failed in a row (0 once one succeeds)")
        failures.add_metric([], consecutive_failures(instance))
        yield failures

        ticks = _gauge("flight_delay_sensor_last_tick_timestamp_seconds", "When each sensor last ticked", ["sensor"])
        for sensor, timestamp in sorted(sensor_last_ticks(instance).items()):
            ticks.add_metric([sensor], timestamp)
        yield ticks

    def _freshness(self) -> Iterator[GaugeMetricFamily]:
        last = _gauge("flight_delay_asset_last_materialization_timestamp_seconds",
                      "When each asset was last materialized (any partition)", ["asset"])
        newest = _gauge("flight_delay_asset_newest_partition_timestamp_seconds",
                        "Start (midnight UTC) of the newest day materialized, per daily-partitioned asset", ["asset"])
        keys = sorted(self.instance.get_asset_keys(), key=lambda k: k.to_user_string())
        events = self.instance.get_latest_materialization_events(keys)
        for key in keys:
            event = events.get(key)
            if event is None:
                continue
            asset = key.to_user_string()
            last.add_metric([asset], event.timestamp)
            if event.asset_materialization and event.asset_materialization.partition:
                days = [t for t in map(day_timestamp, self.instance.get_materialized_partitions(key)) if t is not None]
                if days:
                    newest.add_metric([asset], max(days))
        yield last
        yield newest

    def _champion(self) -> Iterator[GaugeMetricFamily]:
        version = latest_metadata(self.instance, "champion_model").get("champion_version")
        version = str(getattr(version, "value", version)) if version is not None else None
        info = _gauge("flight_delay_champion_info", "1 for the registered model version behind the champion alias", ["model_version"])
        number = _gauge("flight_delay_champion_model_version", "The champion's registered version number (changes() counts promotions)")
        test_auc = _gauge("flight_delay_champion_test_roc_auc", "The champion's ROC AUC on its own test window, as delay_model recorded it")
        if version:
            info.add_metric([version], 1.0)
            if version.isdigit():
                number.add_metric([], float(version))
            for record in _records(self.instance, "delay_model"):
                metadata = record.asset_materialization.metadata if record.asset_materialization else {}
                if str(getattr(metadata.get("model_version"), "value", "")) == version:
                    if (auc := _number(metadata, "test_roc_auc")) is not None:
                        test_auc.add_metric([], auc)
                    break
        yield from (info, number, test_auc)

    @staticmethod
    def _day_value(name: str, documentation: str, found: PartitionValue | None) -> Iterator[GaugeMetricFamily]:
        value = _gauge(name, documentation)
        day = _gauge(name.removesuffix("_ratio") + "_day_timestamp_seconds", f"Which day {name} is of (midnight UTC)")
        if found is not None:
            value.add_metric([], found.value)
            if (timestamp := day_timestamp(found.day)) is not None:
                day.add_metric([], timestamp)
        yield value
        yield day


def registry_for(instance: dg.DagsterInstance) -> CollectorRegistry:
    """A registry holding only the pipeline collector (no process metrics of the exporter itself)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineCollector(instance))
    return registry


def main(argv: list[str] | None = None) -> None:
    from prometheus_client import start_http_server

    parser = argparse.ArgumentParser(prog="flightdelay metrics-exporter", description=__doc__.splitlines()[0])
    exporter = settings.metrics_exporter()
    parser.add_argument("--host", default=exporter.host)
    parser.add_argument("--port", type=int, default=exporter.port)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    instance = dg.DagsterInstance.get()
    server, thread = start_http_server(args.port, addr=args.host, registry=registry_for(instance))
    logger.info("pipeline metrics of the Dagster instance (DAGSTER_HOME) on http://%s:%d/metrics", args.host, args.port)
    try:
        thread.join()
    except KeyboardInterrupt:
        server.shutdown()


if __name__ == "__main__":
    main()
