"""raw → features → training set → model → champion, materialized by Dagster on real weeks of 2013."""

import datetime as dt

import dagster as dg
import pytest

from assets.features import flight_features
from assets.ingest import airports, planes, raw_flights, raw_weather
from assets.training import champion_model, delay_model, training_set
from pipelines.partition_ranges import range_tags
from pipelines.replay import replay
from resources.mlflow_registry import CHAMPION_ALIAS
from tests.conftest import chain_resources

pytestmark = pytest.mark.slow
TRAINING = [training_set, delay_model, champion_model]
FAST_TRAINING = {"ops": {"delay_model": {"config": {"epochs": 6, "patience": 2}}}}


def _train(lake, instance, registry, run_config=FAST_TRAINING):
    return dg.materialize(
        [flight_features.to_source_asset(), *TRAINING],
        resources=chain_resources(lake, registry),
        instance=instance,
        run_config=run_config,
        selection=TRAINING,
        raise_on_error=False,
    )


def test_features_range_writes_every_day(featured_lake):
    lake, _ = featured_lake
    assert len(lake.list("warehouse/flight_features/")) == 28


def test_chain_registers_and_promotes_a_champion(featured_lake, mlflow_registry):
    lake, instance = featured_lake
    result = _train(lake, instance, mlflow_registry)
    assert result.success, [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"reaches_baseline": True, "not_worse_than_champion": True, "behavioural_tests": True}

    client = mlflow_registry.client()
    champion = client.get_model_version_by_alias(mlflow_registry.model_name, CHAMPION_ALIAS)
    assert str(champion.version) == "1"
    assert champion.tags["previous_version"] == "none"
    assert champion.tags["promoted_by"] == f"dagster run {result.run_id}"
    run = client.get_run(champion.run_id)
    assert {"test_roc_auc", "test_pr_auc", "test_log_loss", "baseline_test_roc_auc"} <= set(run.data.metrics)
    assert run.data.tags["dagster_run_id"] == result.run_id
    assert len(run.data.tags["data_fingerprint"]) == 16 and run.data.tags["code_version"]
    assert "epochs" in run.data.params
    history = client.get_metric_history(run.info.run_id, "epoch_val_loss")
    assert len(history) >= 2 and sorted(m.step for m in history) == list(range(1, len(history) + 1))
    assert run.data.params["members"] == "3"  # each network of the ensemble has its own curve
    assert len(client.get_metric_history(run.info.run_id, "member2_epoch_val_loss")) >= 2

    model_event = instance.get_latest_materialization_event(dg.AssetKey("delay_model"))
    metadata = model_event.asset_materialization.metadata
    assert metadata["test_roc_auc"].value > 0.6
    assert metadata["data_fingerprint"].value == run.data.tags["data_fingerprint"]
    importance = mlflow_registry.importance("1")
    groups = {g["group"] for g in importance["groups"]}
    assert {"weather", "carrier"} <= groups and "flight" not in groups
    assert [r.data["group"] for r in metadata["feature_importance"].value.records] == [g["group"] for g in importance["groups"]]
    set_event = instance.get_latest_materialization_event(dg.AssetKey("training_set"))
    assert set_event.asset_materialization.metadata["data_fingerprint"].value == run.data.tags["data_fingerprint"]

    # the registered model loads and scores through MLflow's pyfunc flavour
    import mlflow

    from ml.features import FEATURE_COLUMNS
    from resources.parquet_io import Warehouse

    frame = Warehouse(lake).frame("flight_features", "2013-01-27")
    scores = mlflow.pyfunc.load_model(f"models:/{mlflow_registry.model_name}@champion").predict(frame[list(FEATURE_COLUMNS)])
    assert len(scores) == len(frame) and scores.between(0, 1).all()

    # the same window and seed again: no gain over the champion beyond the noise, so the champion stays
    same = _train(lake, instance, mlflow_registry)
    assert same.success and mlflow_registry.champion_version() == "1"
    gain = mlflow_registry.candidate("2").champion_gain
    assert gain["estimate"] == pytest.approx(0.0, abs=1e-12) and gain["low"] <= 0.005

    # with no margin asked of it, a candidate judged against the champion on the same test set takes over
    anything = {"ops": {**FAST_TRAINING["ops"], "delay_model": {"config": {
        **FAST_TRAINING["ops"]["delay_model"]["config"], "promotion_margin": -1.0}}}}
    second = _train(lake, instance, mlflow_registry, anything)
    assert second.success
    v2 = client.get_model_version_by_alias(mlflow_registry.model_name, CHAMPION_ALIAS)
    assert str(v2.version) == "3" and v2.tags["previous_version"] == "1"
    assert v2.tags["evaluated_against_champion"] == "1"
    table = instance.get_latest_materialization_event(dg.AssetKey("delay_model")).asset_materialization.metadata["feature_importance"]
    first = {g["group"]: g["auc_drop"] for g in importance["groups"]}
    assert {r.data["group"]: r.data["champion v1 drop"] for r in table.value.records} == pytest.approx(
        {group: round(drop, 4) for group, drop in first.items()}), "the champion's importance beside the candidate's"

    from pipelines.importance_drift import report

    assert mlflow_registry.champion_history() == ["1", "3"]
    drift = report(mlflow_registry).splitlines()
    assert drift[0] == "| group | v1 | v3 | v3 − v1 |"
    weather = next(line for line in drift if line.startswith("| weather |")).split(" | ")
    assert float(weather[1]) == pytest.approx(first["weather"], abs=1e-4)


def test_a_candidate_that_fails_its_checks_stays_registered_but_never_champion(featured_lake, mlflow_registry):
    lake, instance = featured_lake
    assert _train(lake, instance, mlflow_registry).success
    impossible = {"ops": {"delay_model": {"config": {"epochs": 2, "patience": 1, "baseline_tolerance": -1.0}}}}
    result = _train(lake, instance, mlflow_registry, impossible)
    assert result.success, "below the baseline while a champion serves: not promoted, the champion stays"
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["reaches_baseline"].passed is False and checks["reaches_baseline"].severity == dg.AssetCheckSeverity.WARN
    assert "champion_model" not in {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    client = mlflow_registry.client()
    rejected = client.get_model_version(mlflow_registry.model_name, "2")
    assert rejected.tags["candidate_status"] == "rejected"
    assert "baseline" in rejected.tags["rejection_reason"]
    assert mlflow_registry.champion_version() == "1"
    candidate, champion = mlflow_registry.candidate("2"), mlflow_registry.champion()
    assert not candidate.passed and "baseline" in candidate.reason and candidate.evaluated_against == "1"
    assert champion.version == "1" and champion.passed and champion.reason == "" and champion.evaluated_against is None
    assert champion.champion_roc_auc is None and candidate.champion_roc_auc == pytest.approx(champion.test_roc_auc, abs=1e-4)
    assert len(candidate.unit_digest) == 64 and candidate.data_fingerprint == champion.data_fingerprint


def test_against_a_real_mlflow_server(featured_lake, tmp_path):
    """The same training and promotion over HTTP: `mlflow server` on 127.0.0.1 with proxied artifacts."""
    from resources.mlflow_registry import MlflowRegistry
    from tests.servers import mlflow_server

    lake, instance = featured_lake
    with mlflow_server(tmp_path / "server") as url:
        registry = MlflowRegistry(tracking_uri=url, lock_path=str(tmp_path / "promotion.lock"))
        result = _train(lake, instance, registry)
        assert result.success
        assert registry.champion_version() == "1"
        metadata = instance.get_latest_materialization_event(dg.AssetKey("delay_model")).asset_materialization.metadata
        assert metadata["mlflow_run"].value.startswith(f"{url}/#/experiments/")
        with_tmp = tmp_path / "download"
        unit_dir = registry.download_verified_unit("1", str(with_tmp))
        assert (unit_dir / "weights.pt").exists()


def test_dask_engine_gives_the_same_features_as_pandas(lake):
    """Long ranges go to the Dask cluster in chunks of days; the output must not depend on the engine."""
    from resources.parquet_io import Warehouse

    replay(lake, dt.date(2013, 1, 1), dt.date(2013, 1, 5))
    resources = {k: v for k, v in chain_resources(lake, None).items() if v is not None}
    tags = range_tags("2013-01-01", "2013-01-05")
    assert dg.materialize([raw_flights, raw_weather, planes, airports], resources=resources, tags=tags).success
    pandas_run = dg.materialize([flight_features], resources=resources, tags=tags)
    pandas_frames = {d: Warehouse(lake).frame("flight_features", d) for d in ("2013-01-02", "2013-01-05")}
    dask_config = {"ops": {"flight_features": {"config": {"dask_min_partitions": 1, "days_per_task": 2}}}}
    dask_run = dg.materialize([flight_features], resources=resources, tags=tags, run_config=dask_config)
    engines = [
        e.materialization.metadata["engine"].value
        for run in (pandas_run, dask_run) for e in run.get_asset_materialization_events()[:1]
    ]
    assert engines == ["pandas", "dask"]
    for day, frame in pandas_frames.items():
        import pandas as pd

        pd.testing.assert_frame_equal(Warehouse(lake).frame("flight_features", day), frame)


def test_features_that_fail_their_checks_are_not_written(lake):
    """Training lists feature files: a failed check must mean there is no file to list."""
    import io

    import pandas as pd

    replay(lake, dt.date(2013, 1, 1), dt.date(2013, 1, 2))
    resources = {k: v for k, v in chain_resources(lake, None).items() if v is not None}
    tags = range_tags("2013-01-01", "2013-01-02")
    assert dg.materialize([raw_flights, raw_weather, planes, airports], resources=resources, tags=tags).success
    key = "warehouse/raw_flights/2013-01-02.parquet"
    day = pd.read_parquet(io.BytesIO(lake.read_bytes(key)))
    buffer = io.BytesIO()
    pd.concat([day, day.head(3)], ignore_index=True).to_parquet(buffer, index=False)
    lake.write_bytes(key, buffer.getvalue())  # an upstream fault past the raw checks: duplicated flights

    result = dg.materialize([flight_features], resources=resources, tags=tags, raise_on_error=False)
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["model_inputs_intact"].passed
    assert "3 duplicate key(s)" in checks["model_inputs_intact"].description
    assert lake.list("warehouse/flight_features/") == []
    assert not result.get_asset_materialization_events()
