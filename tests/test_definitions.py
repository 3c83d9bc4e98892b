"""The code location: what it defines, and that everything in it is described for the UI."""

import subprocess
import sys

import dagster as dg
import pytest

from pipelines.definitions import defs

RAW_ASSETS = {"raw_flights", "raw_weather", "planes", "airports"}
EXPECTED_ASSETS = RAW_ASSETS | {
    "late_history", "flight_features", "training_set", "delay_model", "champion_model", "bento", "bento_release",
    "batch_predictions", "drift_report", "model_performance", "streamed_predictions",
}
EXPECTED_CHECKS = {(a, "landing_contract") for a in RAW_ASSETS} | {
    ("flight_features", "feature_null_shares"),
    ("flight_features", "model_inputs_intact"),
    ("flight_features", "label_rate_in_bounds"),
    ("flight_features", "one_row_per_raw_flight"),
    ("delay_model", "reaches_baseline"),
    ("delay_model", "not_worse_than_champion"),
    ("delay_model", "behavioural_tests"),
    ("bento", "serves_registry_predictions"),
    ("drift_report", "drift_check"),
    ("model_performance", "performance_check"),
    ("streamed_predictions", "stream_consumer_keeps_up"),
}
EXPECTED_JOBS = {"ingest_job", "features_job", "training_job", "batch_predictions_job", "bento_job", "monitoring_job"}
EXPECTED_SENSORS = {
    "landing_zone_sensor", "retrain_on_drift_sensor", "deploy_on_promotion_sensor", "run_failure_alert",
    "automation_sensor", "orphaned_run_sensor", "audit_trail_sensor",
}
EXPECTED_SCHEDULES = {"daily_monitoring_schedule"}


@pytest.fixture(scope="module")
def graph():
    return defs.resolve_asset_graph()


def test_snapshot_of_the_graph(graph):
    """Changing the graph is a decision: update this snapshot on purpose."""
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == EXPECTED_ASSETS
    assert {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys} == EXPECTED_CHECKS
    assert {j.name for j in defs.resolve_all_job_defs() if not j.name.startswith("__")} == EXPECTED_JOBS
    assert {s.name for s in defs.sensors} == EXPECTED_SENSORS
    assert {s.name for s in defs.schedules} == EXPECTED_SCHEDULES


EXPECTED_READS = {
    "flight_features": {"raw_flights", "raw_weather", "planes", "airports", "late_history"},
    "late_history": {"raw_flights", "late_history"},
    "training_set": {"flight_features", "raw_flights", "raw_weather"},
    "bento": {"champion_model", "training_set"},
    "batch_predictions": {"flight_features", "champion_model"},
    "drift_report": {"flight_features", "champion_model"},
    "model_performance": {"flight_features", "batch_predictions"},
}
"""What each asset reads from the warehouse (or the registry): every read is an edge, so the UI's lineage is true."""


def test_every_warehouse_read_is_a_declared_dependency(graph):
    for asset, reads in EXPECTED_READS.items():
        parents = {k.to_user_string() for k in graph.get(dg.AssetKey(asset)).parent_keys}
        assert reads <= parents, (asset, reads - parents)


def test_every_asset_has_group_kinds_and_description(graph):
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.group_name and node.group_name != "default", key
        assert node.kinds, key
        assert node.description and len(node.description) > 30, key


def test_daily_assets_run_ranges_in_one_step(graph):
    for name in ("raw_flights", "raw_weather", "late_history", "flight_features", "batch_predictions", "drift_report", "model_performance"):
        node = graph.get(dg.AssetKey(name))
        assert isinstance(node.partitions_def, dg.DailyPartitionsDefinition)
        assert node.partitions_def.get_num_partitions() == 365
        assert node.backfill_policy == dg.BackfillPolicy.single_run()


MONITORING_CHECKS = {"drift_check", "performance_check"}
WARNING_CHECKS = {"feature_null_shares", "stream_consumer_keeps_up"}
"""What the model tolerates (missing values) warns, never holds a day back (docs/gates.md); so does a lagging stream processor."""


def test_contract_checks_are_blocking_and_monitoring_checks_are_not(graph):
    """Bad data must not flow on; drift and decay must not stop the day's report (they trigger retraining)."""
    for key in graph.asset_check_keys:
        assert graph.get_check_spec(key).blocking == (key.name not in MONITORING_CHECKS | WARNING_CHECKS), key


def test_new_days_flow_by_automation_without_rescoring_on_a_new_champion(graph):
    for name in ("flight_features", "batch_predictions"):
        condition = graph.get(dg.AssetKey(name)).automation_condition
        assert condition is not None and "any partition" in condition.get_label(), name
    assert "champion_model" in graph.get(dg.AssetKey("batch_predictions")).automation_condition.get_label()


def test_resources_are_bound():
    assert {"storage", "io_manager", "registry", "compute", "dask", "bentos", "stream"} <= set(defs.resources)


def test_the_stream_is_observed_on_demand_only(graph):
    """No job `make run` starts selects streamed_predictions, and no automation materializes it: without NATS_URL it fails."""
    node = graph.get(dg.AssetKey("streamed_predictions"))
    assert node.automation_condition is None
    assert isinstance(node.partitions_def, dg.DailyPartitionsDefinition)
    for job in defs.resolve_all_job_defs():
        if not job.name.startswith("__"):
            assert dg.AssetKey("streamed_predictions") not in job.asset_layer.selected_asset_keys, job.name


def test_training_job_ends_with_a_bento():
    job = defs.resolve_job_def("training_job")
    assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} == {
        "training_set", "delay_model", "champion_model", "bento", "bento_release",
    }


def test_training_runs_in_pools_a_deployment_can_limit(graph):
    assert graph.get(dg.AssetKey("delay_model")).pools == {"training"}
    assert graph.get(dg.AssetKey("champion_model")).pools == {"champion_promotion"}


def test_heavy_libraries_are_not_imported_by_the_code_location():
    code = (
        "import sys, pipelines.definitions; "
        "heavy = [m for m in ('torch', 'mlflow', 'evidently', 'great_expectations', 'bentoml', 'sklearn', 'pandas') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.slow
def test_dagster_validates_the_workspace(tmp_path):
    env = {"DAGSTER_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    dagster = [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"]
    out = subprocess.run(dagster, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "All code locations passed validation" in out.stdout + out.stderr
