"""pipelines.metrics_exporter: what a scrape shows of a Dagster instance with a real ingest and a pipeline's history."""

import time

import dagster as dg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ml.gates import DRIFT_SHARE_THRESHOLD, PERFORMANCE_AUC_TOLERANCE
from pipelines.metrics_exporter import day_timestamp, registry_for
from tests.monitoring import pipeline_history as history


def _scrape(instance) -> dict[str, dict[frozenset, float]]:
    """``{metric sample name: {labels: value}}`` of one scrape in the exposition format."""
    from prometheus_client import generate_latest

    out: dict[str, dict[frozenset, float]] = {}
    for family in text_string_to_metric_families(generate_latest(registry_for(instance)).decode()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return out


def _one(scrape, name, **labels) -> float:
    return scrape[name][frozenset(labels.items())]


@pytest.fixture
def instance(tmp_path):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        yield instance


def test_an_empty_instance_scrapes_without_values_it_does_not_have(instance):
    scrape = _scrape(instance)
    assert _one(scrape, "flight_delay_training_consecutive_failures") == 0
    assert _one(scrape, "flight_delay_drift_share_gate_ratio") == DRIFT_SHARE_THRESHOLD
    assert "flight_delay_drift_share_ratio" not in scrape and "flight_delay_champion_info" not in scrape


@pytest.mark.slow
def test_scrape_shows_ingest_freshness_quality_training_and_sensors(instance, lake):
    started = time.time()
    rows = history.ingest(instance, lake)
    history.record_monitoring_and_training(instance)
    tick = history.record_sensor_tick(instance, seconds_ago=30)
    scrape = _scrape(instance)

    for day in ("2013-01-01", "2013-01-02"):
        assert _one(scrape, "flight_delay_ingest_rows", asset="raw_flights", day=day, outcome="ingested") == rows[day]
        assert _one(scrape, "flight_delay_ingest_rows", asset="raw_flights", day=day, outcome="held_back") == 0
    assert _one(scrape, "flight_delay_ingest_rows", asset="raw_flights", day=history.HELD_BACK_DAY, outcome="held_back") \
        == rows[history.HELD_BACK_DAY]
    assert _one(scrape, "flight_delay_ingest_rows", asset="raw_weather", day=history.HELD_BACK_DAY, outcome="ingested") > 0
    assert _one(scrape, "flight_delay_ingest_held_back_days", asset="raw_flights") == 1
    assert _one(scrape, "flight_delay_ingest_held_back_days", asset="raw_weather") == 0

    newest = scrape["flight_delay_asset_newest_partition_timestamp_seconds"]
    assert newest[frozenset({("asset", "raw_weather")})] == day_timestamp("2013-01-03")
    assert newest[frozenset({("asset", "drift_report")})] == day_timestamp("2013-01-03")
    assert frozenset({("asset", "champion_model")}) not in newest, "unpartitioned assets have no newest day"
    last = scrape["flight_delay_asset_last_materialization_timestamp_seconds"]
    assert started <= last[frozenset({("asset", "raw_flights")})] <= time.time()

    assert _one(scrape, "flight_delay_drift_share_ratio") == history.DRIFT["2013-01-02"], "the newest evaluated day"
    assert _one(scrape, "flight_delay_drift_share_day_timestamp_seconds") == day_timestamp("2013-01-02")
    assert _one(scrape, "flight_delay_realised_roc_auc") == history.REALISED["2013-01-02"]["roc_auc"]
    assert _one(scrape, "flight_delay_realised_roc_auc_window_upper") == history.REALISED["2013-01-02"]["window_roc_auc_high"]
    assert _one(scrape, "flight_delay_realised_roc_auc_gate") == pytest.approx(0.74 - PERFORMANCE_AUC_TOLERANCE)
    assert _one(scrape, "flight_delay_training_duration_seconds") == history.TRAIN_SECONDS
    assert _one(scrape, "flight_delay_champion_info", model_version=history.CHAMPION) == 1
    assert _one(scrape, "flight_delay_champion_model_version") == float(history.CHAMPION)
    assert _one(scrape, "flight_delay_champion_test_roc_auc") == history.CHAMPION_TEST_AUC, "the champion's, not the newest candidate's"
    assert _one(scrape, "flight_delay_sensor_last_tick_timestamp_seconds", sensor=history.SENSOR) == pytest.approx(tick)


def test_training_failures_count_in_a_row_and_reset_on_success(instance):
    history.run_training_job(instance, succeed=True)
    history.run_training_job(instance, succeed=False)
    assert _one(_scrape(instance), "flight_delay_training_consecutive_failures") == 1
    history.run_training_job(instance, succeed=False)
    assert _one(_scrape(instance), "flight_delay_training_consecutive_failures") == 2
    history.run_training_job(instance, succeed=True)
    assert _one(_scrape(instance), "flight_delay_training_consecutive_failures") == 0
