"""A Dagster instance with a pipeline's history, for the exporter's tests.

The ingest is real (three replayed days of 2013, the third with a broken flights file, so it is held
back). Drift, realised performance, training and promotion are recorded as the assets record them
(same asset keys, same metadata keys; their own tests run them for real), and the training job's
run outcomes and a sensor's ticks are real run and tick records in the instance's storage.
"""

from __future__ import annotations

import datetime as dt
import io
import time

import dagster as dg
import pandas as pd

from assets.ingest import raw_flights, raw_weather
from ml.landing import landing_key
from pipelines.partition_ranges import range_tags
from pipelines.replay import replay
from tests.conftest import resources_for

DAYS = ("2013-01-01", "2013-01-03")
HELD_BACK_DAY = "2013-01-03"
DRIFT = {"2013-01-01": 0.2, "2013-01-02": 0.75}
REALISED = {"2013-01-01": {"roc_auc": 0.71, "window_roc_auc_high": 0.74, "model_test_roc_auc": 0.74},
            "2013-01-02": {"roc_auc": 0.62, "window_roc_auc_high": 0.705, "model_test_roc_auc": 0.74}}
CHAMPION, CHAMPION_TEST_AUC, CANDIDATE = "3", 0.7412, "4"
TRAIN_SECONDS = 42.5
SENSOR = "landing_zone_sensor"


def _break_flights(lake, day: str) -> int:
    """Put text into a number column of ``day``'s landing file (the contract holds the day back); its row count."""
    key = landing_key("flights", day)
    frame = pd.read_csv(io.BytesIO(lake.read_bytes(key)), dtype=str, keep_default_na=False)
    frame.loc[3, "distance"] = "n/a km"
    lake.write_bytes(key, frame.to_csv(index=False).encode())
    return len(frame)


def ingest(instance: dg.DagsterInstance, lake) -> dict[str, int]:
    """Replay and ingest ``DAYS`` for real; the landing files' row counts by day."""
    replay(lake, *(dt.date.fromisoformat(d) for d in DAYS))
    rows = {d: len(pd.read_csv(io.BytesIO(lake.read_bytes(landing_key("flights", d))))) for d in ("2013-01-01", "2013-01-02")}
    rows[HELD_BACK_DAY] = _break_flights(lake, HELD_BACK_DAY)
    # The contract check fails for the held-back day: the run fails, every day's materialization is recorded.
    dg.materialize([raw_flights, raw_weather], resources=resources_for(lake), tags=range_tags(*DAYS),
                   instance=instance, raise_on_error=False)
    return rows


def record_monitoring_and_training(instance: dg.DagsterInstance) -> None:
    """Drift, realised performance, two trainings and a promotion, with the assets' metadata keys."""
    for day, share in DRIFT.items():
        instance.report_runless_asset_event(dg.AssetMaterialization("drift_report", partition=day,
                                                                    metadata={"drift_share": share, "rows_current": 900}))
    instance.report_runless_asset_event(dg.AssetMaterialization("drift_report", partition="2013-01-03",
                                                                metadata={"drift_share": "not evaluated"}))
    for day, values in REALISED.items():
        instance.report_runless_asset_event(dg.AssetMaterialization("model_performance", partition=day,
                                                                    metadata={**values, "model_version": CHAMPION}))
    for version, auc in ((CHAMPION, CHAMPION_TEST_AUC), (CANDIDATE, 0.7301)):
        instance.report_runless_asset_event(dg.AssetMaterialization(
            "delay_model", metadata={"model_version": version, "test_roc_auc": auc, "train_seconds": TRAIN_SECONDS}))
    instance.report_runless_asset_event(dg.AssetMaterialization(
        "champion_model", metadata={"champion_version": CHAMPION, "previous_version": "2"}))


def run_training_job(instance: dg.DagsterInstance, succeed: bool) -> None:
    """A real run of a job named ``training_job`` that ends in SUCCESS or FAILURE."""

    @dg.asset(name="training_outcome")
    def outcome():
        if not succeed:
            raise dg.Failure("candidate rejected")

    job = dg.Definitions(assets=[outcome], jobs=[dg.define_asset_job("training_job", selection=[outcome])]) \
        .resolve_job_def("training_job")
    job.execute_in_process(instance=instance, raise_on_error=False)


def record_sensor_tick(instance: dg.DagsterInstance, seconds_ago: float) -> float:
    """A tick of ``SENSOR`` in the instance's schedule storage (as the daemon writes it); its timestamp."""
    from dagster._core.definitions.run_request import InstigatorType
    from dagster._core.remote_origin import InProcessCodeLocationOrigin, RemoteInstigatorOrigin, RemoteRepositoryOrigin
    from dagster._core.scheduler.instigation import InstigatorState, InstigatorStatus, TickData, TickStatus
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    location = InProcessCodeLocationOrigin(LoadableTargetOrigin(module_name="pipelines.definitions"))
    state = InstigatorState(RemoteInstigatorOrigin(RemoteRepositoryOrigin(location, "__repository__"), SENSOR),
                            InstigatorType.SENSOR, InstigatorStatus.RUNNING)
    if instance.get_instigator_state(state.instigator_origin_id, state.selector_id) is None:
        instance.add_instigator_state(state)
    timestamp = time.time() - seconds_ago
    instance.create_tick(TickData(instigator_origin_id=state.instigator_origin_id, instigator_name=SENSOR,
                                  instigator_type=InstigatorType.SENSOR, status=TickStatus.SKIPPED,
                                  timestamp=timestamp, selector_id=state.selector_id))
    return timestamp
