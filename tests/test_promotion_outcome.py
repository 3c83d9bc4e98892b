"""A candidate not better than the champion is a completed evaluation: the run succeeds, nothing is promoted,
nothing downstream (the Bento) is built, and the run-failure alert stays silent; so for a candidate below the
baseline while a champion serves. A first candidate below the baseline, with nothing to fall back on, fails."""

import json

import dagster as dg
import pytest

from assets.features import flight_features
from assets.run_tags import OUTCOME_TAG, WINDOW_LAST_DAY_TAG, TrainingOutcome
from assets.training import champion_model, delay_model, training_set

PROMOTED, NOT_PROMOTED = TrainingOutcome.PROMOTED, TrainingOutcome.NOT_PROMOTED
from resources.alerts import AlertWebhook
from sensors.alerting import run_failure_alert
from tests.conftest import FEATURED_DAYS, chain_resources
from tests.servers import webhook_receiver

pytestmark = pytest.mark.slow
FAST = {"epochs": 4, "patience": 2}


@dg.asset(deps=[champion_model])
def bento():
    """Stands in for the Bento build downstream of champion_model in training_job: it must not run."""
    return dg.MaterializeResult(metadata={"built": True})


def _train(lake, instance, registry, **config):
    assets = [training_set, delay_model, champion_model, bento]
    return dg.materialize(
        [flight_features.to_source_asset(), *assets], resources=chain_resources(lake, registry), instance=instance,
        run_config={"ops": {"delay_model": {"config": {**FAST, **config}}}}, selection=assets, raise_on_error=False,
    )


def _alerts_for_runs_after(instance, cursor):
    """Tick run_failure_alert (the real run-status sensor) against a local webhook; the payloads it posted."""
    with webhook_receiver() as (url, received):
        context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"alerts": AlertWebhook(url=url)})
        result = run_failure_alert.evaluate_tick(context)
    return [json.loads(body) for body in received], result.cursor


def test_a_candidate_not_better_than_the_champion_ends_success_unpromoted_and_unalerted(featured_lake, mlflow_registry):
    lake, instance = featured_lake
    _, cursor = _alerts_for_runs_after(instance, None)

    first = _train(lake, instance, mlflow_registry)
    assert first.success and mlflow_registry.champion_version() == "1"
    assert instance.get_run_by_id(first.run_id).tags[OUTCOME_TAG] == PROMOTED
    assert instance.get_run_by_id(first.run_id).tags[WINDOW_LAST_DAY_TAG] == FEATURED_DAYS[1]

    # The candidate must beat the champion by a whole AUC point: a sound model that cannot win.
    second = _train(lake, instance, mlflow_registry, promotion_margin=1.0)
    assert second.success, "not better than the champion is an outcome, not a failure"
    checks = {e.check_name: e for e in second.get_asset_check_evaluations()}
    assert checks["not_worse_than_champion"].passed is False
    assert checks["not_worse_than_champion"].severity == dg.AssetCheckSeverity.WARN
    assert checks["reaches_baseline"].passed and checks["behavioural_tests"].passed
    materialized = {e.asset_key.to_user_string() for e in second.get_asset_materialization_events()}
    assert materialized == {"training_set", "delay_model"}, "no promotion, no Bento for a rejected candidate"
    (observation,) = [e.asset_observation_data.asset_observation for e in second.all_events
                      if e.event_type == dg.DagsterEventType.ASSET_OBSERVATION]
    assert observation.metadata["promoted"].value is False
    assert "champion v1" in observation.metadata["reason"].value
    assert instance.get_run_by_id(second.run_id).tags[OUTCOME_TAG] == NOT_PROMOTED
    assert mlflow_registry.champion_version() == "1"
    assert mlflow_registry.client().get_model_version(mlflow_registry.model_name, "2").tags["candidate_status"] == "rejected"
    gain = mlflow_registry.candidate("2").champion_gain  # the evidence, recorded where it is decided and with the version
    assert gain["champion_version"] == "1" and gain["low"] <= gain["estimate"] <= gain["high"] and gain["level"] == 0.99
    assert gain["test_days"][0] <= gain["test_days"][1] and gain["flights"] > 0
    assert observation.metadata["champion_gain"].value == gain
    run = mlflow_registry.client().get_run(mlflow_registry.candidate("2").run_id)
    assert run.data.metrics["champion_gain_low"] == pytest.approx(gain["low"], abs=1e-6)

    alerts, cursor = _alerts_for_runs_after(instance, cursor)
    assert alerts == []

    # Below the baseline while a champion serves: not promoted either, the run succeeds, nothing is alerted.
    weak = _train(lake, instance, mlflow_registry, baseline_tolerance=-1.0)
    assert weak.success and instance.get_run_by_id(weak.run_id).tags[OUTCOME_TAG] == NOT_PROMOTED
    checks = {e.check_name: e for e in weak.get_asset_check_evaluations()}
    assert checks["reaches_baseline"].passed is False and checks["reaches_baseline"].severity == dg.AssetCheckSeverity.WARN
    assert mlflow_registry.champion_version() == "1"
    alerts, _ = _alerts_for_runs_after(instance, cursor)
    assert alerts == []


def test_a_first_candidate_below_the_baseline_fails_the_run_and_is_alerted(featured_lake, mlflow_registry):
    """With no champion there is nothing to fall back on: below the baseline is a fault, alerted once as an error."""
    lake, instance = featured_lake
    _, cursor = _alerts_for_runs_after(instance, None)
    faulty = _train(lake, instance, mlflow_registry, baseline_tolerance=-1.0)
    assert not faulty.success and OUTCOME_TAG not in instance.get_run_by_id(faulty.run_id).tags
    checks = {e.check_name: e for e in faulty.get_asset_check_evaluations()}
    assert checks["reaches_baseline"].severity == dg.AssetCheckSeverity.ERROR
    assert mlflow_registry.champion_version() is None
    alerts, _ = _alerts_for_runs_after(instance, cursor)
    assert [(a["run_id"], a["severity"]) for a in alerts] == [(faulty.run_id, "error")]
