"""The loop's sensors on a real (ephemeral) instance: fire once per failed check, respect cooldown and running training,
retrain on drift only once new labelled days arrived, back off after rejections with one warning."""

import json
import uuid

import dagster as dg
import pytest

from resources.alerts import AlertWebhook
from sensors.alerting import run_failure_alert
from sensors.deployment import deploy_on_promotion_sensor
from sensors.retraining import retrain_on_drift_sensor
from tests.check_stand_ins import check_result_stand_in
from tests.servers import webhook_receiver


def _drift_report_with(passed: bool):
    return check_result_stand_in("drift_report", "drift_check", passed, "share 1.0 on 2013-07-15")


def _evaluate(sensor, instance, cursor=None, **resources):
    if sensor is retrain_on_drift_sensor:
        resources.setdefault("alerts", AlertWebhook())
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources or None)
    return sensor.evaluate_tick(context)


@pytest.fixture
def instance():
    with dg.instance_for_test() as test_instance:
        yield test_instance


def test_a_failed_drift_check_requests_one_training_run(instance, monkeypatch):
    monkeypatch.setenv("RETRAIN_COOLDOWN_S", "3600")
    first = _evaluate(retrain_on_drift_sensor, instance)
    assert not first.run_requests and "no failed" in first.skip_message

    dg.materialize([_drift_report_with(False)], instance=instance, raise_on_error=False)
    fired = _evaluate(retrain_on_drift_sensor, instance, first.cursor)
    (request,) = fired.run_requests
    assert request.run_key.startswith("retrain-after-check-evaluation-")
    assert request.tags["retrain/trigger"] == "drift_report:drift_check"

    again = _evaluate(retrain_on_drift_sensor, instance, fired.cursor)
    assert not again.run_requests, "the same evaluation never fires twice"

    assert dg.materialize([_drift_report_with(True)], instance=instance).success
    passed = _evaluate(retrain_on_drift_sensor, instance, again.cursor)
    assert not passed.run_requests


def _add_training_run(instance, status: dg.DagsterRunStatus, tags=None, job_name="training_job",
                      root_run_id=None) -> dg.DagsterRun:
    run = dg.DagsterRun(job_name=job_name, run_id=str(uuid.uuid4()), status=status, tags=tags or {},
                        root_run_id=root_run_id, parent_run_id=root_run_id)
    return instance.add_run(run)


def test_no_new_training_while_one_is_queued_or_running(instance):
    cursor = _evaluate(retrain_on_drift_sensor, instance).cursor
    _add_training_run(instance, dg.DagsterRunStatus.STARTED)
    dg.materialize([_drift_report_with(False)], instance=instance, raise_on_error=False)
    result = _evaluate(retrain_on_drift_sensor, instance, cursor)
    assert not result.run_requests and "already queued or running" in result.skip_message


def test_a_failed_training_the_daemon_will_retry_counts_as_in_flight(instance, monkeypatch):
    """Run retries on: a killed training run is re-executed by the daemon; the sensor must not start a second."""
    monkeypatch.setenv("RETRAIN_COOLDOWN_S", "0")
    cursor = _evaluate(retrain_on_drift_sensor, instance).cursor
    _add_training_run(instance, dg.DagsterRunStatus.FAILURE, tags={"dagster/will_retry": "true"})
    dg.materialize([_drift_report_with(False)], instance=instance, raise_on_error=False)
    waiting = _evaluate(retrain_on_drift_sensor, instance, cursor)
    assert not waiting.run_requests and "about to be retried" in waiting.skip_message

    busy = _evaluate(deploy_on_promotion_sensor, instance, registry=_FakeRegistry(version="4"))
    assert not busy.run_requests and "training_job is queued or running" in busy.skip_message


def test_retries_of_a_bento_build_are_one_attempt(instance):
    """The daemon's re-executions carry the build's tags: they must not use up the deploy sensor's attempts."""
    tags = {"deploy/champion_version": "3", "deploy/after_bento": "0"}
    root = _add_training_run(instance, dg.DagsterRunStatus.FAILURE, tags={**tags, "dagster/will_retry": "false"},
                             job_name="bento_job")
    for number in ("1", "2"):
        _add_training_run(instance, dg.DagsterRunStatus.FAILURE, job_name="bento_job", root_run_id=root.run_id, tags={
            **tags, "dagster/will_retry": "false", "dagster/retry_number": number, "dagster/root_run_id": root.run_id,
        })
    result = _evaluate(deploy_on_promotion_sensor, instance, registry=_FakeRegistry(version="3"))
    (request,) = result.run_requests
    assert request.run_key.endswith("attempt-2")


def test_cooldown_after_any_training_even_a_failed_one(instance, monkeypatch):
    cursor = _evaluate(retrain_on_drift_sensor, instance).cursor
    _add_training_run(instance, dg.DagsterRunStatus.FAILURE)
    dg.materialize([_drift_report_with(False)], instance=instance, raise_on_error=False)

    monkeypatch.setenv("RETRAIN_COOLDOWN_S", "3600")
    held = _evaluate(retrain_on_drift_sensor, instance, cursor)
    assert not held.run_requests and "cooldown" in held.skip_message

    dg.materialize([_drift_report_with(False)], instance=instance, raise_on_error=False)
    monkeypatch.setenv("RETRAIN_COOLDOWN_S", "0")
    after = _evaluate(retrain_on_drift_sensor, instance, held.cursor)
    assert len(after.run_requests) == 1


class _FakeRegistry(dg.ConfigurableResource):
    """Only the champion: what the deploy sensor asks the registry."""

    version: str | None = None

    def champion(self):
        from resources.mlflow_registry import Candidate

        if self.version is None:
            return None
        return Candidate(
            version=self.version, run_id="run", model_uri=f"models:/flight_delay/{self.version}", passed=True,
            reason="", test_roc_auc=0.7, baseline_roc_auc=0.68, champion_roc_auc=None, evaluated_against=None,
            data_fingerprint="fp", unit_digest="0" * 64, dagster_run_id="dagster-run",
        )


def _bento_materialized(instance, version: str):
    @dg.asset(name="bento")
    def stand_in():
        return dg.MaterializeResult(metadata={"model_version": version})

    dg.materialize([stand_in], instance=instance)


def test_a_moved_champion_without_a_bento_requests_one_build(instance):
    none = _evaluate(deploy_on_promotion_sensor, instance, registry=_FakeRegistry(version=None))
    assert not none.run_requests

    moved = _evaluate(deploy_on_promotion_sensor, instance, registry=_FakeRegistry(version="3"))
    (request,) = moved.run_requests
    assert request.run_key == "bento-for-champion-v3-after-0-attempt-1"

    _bento_materialized(instance, "3")
    built = _evaluate(deploy_on_promotion_sensor, instance, registry=_FakeRegistry(version="3"))
    assert not built.run_requests and "already serves" in built.skip_message

    _add_training_run(instance, dg.DagsterRunStatus.STARTED)
    busy = _evaluate(deploy_on_promotion_sensor, instance, registry=_FakeRegistry(version="4"))
    assert not busy.run_requests and "training_job is queued or running" in busy.skip_message


def test_run_failure_alert_posts_to_the_webhook(instance, monkeypatch):
    @dg.asset
    def broken():
        raise RuntimeError("the lake is on fire")

    result = dg.materialize([broken], instance=instance, raise_on_error=False)
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_alert", dagster_instance=instance, dagster_run=result.dagster_run,
        dagster_event=failure,
    ).for_run_failure()
    with webhook_receiver() as (url, received):
        run_failure_alert(context, alerts=AlertWebhook(url=url))
    (alert,) = [json.loads(body) for body in received]
    assert alert["run_id"] == result.run_id and "failed" in alert["text"]


def _features_of(instance, *days):
    """Stand-in flight_features partitions: the sensor counts labelled days by materialized partitions."""
    from assets.partitions import daily_partitions

    @dg.asset(name="flight_features", partitions_def=daily_partitions)
    def stand_in():
        return dg.MaterializeResult()

    for day in days:
        assert dg.materialize([stand_in], instance=instance, partition_key=day).success


def _trained(instance, window_last_day: str, outcome: str):
    """A finished training run with its outcome tag, after a training_set window ending ``window_last_day``."""
    from assets.run_tags import TrainingOutcome, TrainingRunTags

    @dg.asset(name="training_set")
    def stand_in():
        return dg.MaterializeResult(metadata={"last_day": window_last_day})

    dg.materialize([stand_in], instance=instance)
    return _add_training_run(instance, dg.DagsterRunStatus.SUCCESS, tags=TrainingRunTags(TrainingOutcome(outcome)).format())


def _performance_report_with(passed: bool):
    return check_result_stand_in("model_performance", "performance_check", passed, "AUC 0.55 vs 0.70")


def test_repeated_drift_without_new_labelled_days_does_not_retrain(instance, monkeypatch):
    from assets.run_tags import TrainingOutcome

    PROMOTED = TrainingOutcome.PROMOTED

    monkeypatch.setenv("RETRAIN_COOLDOWN_S", "0")
    monkeypatch.setenv("RETRAIN_DRIFT_MIN_NEW_DAYS", "3")
    _features_of(instance, "2013-03-30", "2013-03-31")
    _trained(instance, "2013-03-31", PROMOTED)
    cursor = _evaluate(retrain_on_drift_sensor, instance).cursor

    skipped = []
    for new_day in ("2013-06-20", "2013-06-21", None, None):  # two new days, then drift again and again without data
        if new_day:
            _features_of(instance, new_day)
        dg.materialize([_drift_report_with(False)], instance=instance, raise_on_error=False)
        result = _evaluate(retrain_on_drift_sensor, instance, cursor)
        assert not result.run_requests
        skipped.append(result.skip_message)
        cursor = result.cursor
    assert all("drift seen, retraining cannot help yet" in m for m in skipped)
    assert ["1 of 3" in skipped[0], "2 of 3" in skipped[1], "2 of 3" in skipped[2], "2 of 3" in skipped[3]] == [True] * 4
    assert len(instance.get_run_records(dg.RunsFilter(job_name="training_job"))) == 1

    _features_of(instance, "2013-06-22")
    dg.materialize([_drift_report_with(False)], instance=instance, raise_on_error=False)
    (request,) = _evaluate(retrain_on_drift_sensor, instance, cursor).run_requests
    assert request.tags["retrain/trigger"] == "drift_report:drift_check"
    assert (request.tags["retrain/new_labelled_days"], request.tags["retrain/required_new_days"]) == ("3", "3")
    assert "3 labelled day(s) since the last window ended 2013-03-31" in request.tags["retrain/policy"]


def test_a_failed_performance_check_retrains_on_one_new_labelled_day(instance, monkeypatch):
    from assets.run_tags import TrainingOutcome

    PROMOTED = TrainingOutcome.PROMOTED

    monkeypatch.setenv("RETRAIN_COOLDOWN_S", "0")
    _trained(instance, "2013-03-31", PROMOTED)
    cursor = _evaluate(retrain_on_drift_sensor, instance).cursor
    _features_of(instance, "2013-06-20")
    dg.materialize([_drift_report_with(False)], instance=instance, raise_on_error=False)
    dg.materialize([_performance_report_with(False)], instance=instance, raise_on_error=False)
    (request,) = _evaluate(retrain_on_drift_sensor, instance, cursor).run_requests
    assert request.tags["retrain/trigger"] == "model_performance:performance_check", "realised performance first"
    assert request.tags["retrain/failed_evaluations"] == "2"


def test_rejections_back_off_and_raise_one_warning_per_streak(instance, monkeypatch):
    from assets.run_tags import TrainingOutcome

    NOT_PROMOTED, PROMOTED = TrainingOutcome.NOT_PROMOTED, TrainingOutcome.PROMOTED

    monkeypatch.setenv("RETRAIN_COOLDOWN_S", "0")
    monkeypatch.setenv("RETRAIN_DRIFT_MIN_NEW_DAYS", "2")
    _trained(instance, "2013-06-01", PROMOTED)
    _trained(instance, "2013-06-05", NOT_PROMOTED)
    cursor = None
    with webhook_receiver() as (url, received):
        alerts = AlertWebhook(url=url)
        cursor = _evaluate(retrain_on_drift_sensor, instance, cursor, alerts=alerts).cursor
        assert received == [], "one rejection is the gate working"

        _trained(instance, "2013-06-07", NOT_PROMOTED)
        for _ in range(3):
            cursor = _evaluate(retrain_on_drift_sensor, instance, cursor, alerts=alerts).cursor
        _trained(instance, "2013-06-09", NOT_PROMOTED)  # the streak goes on: still the one warning
        _features_of(instance, *(f"2013-06-{d:02d}" for d in range(10, 20)))
        dg.materialize([_drift_report_with(False)], instance=instance, raise_on_error=False)
        held = _evaluate(retrain_on_drift_sensor, instance, cursor, alerts=alerts)
        cursor = held.cursor
        (warning,) = [json.loads(body) for body in received]
        assert not held.run_requests and "10 of 16 labelled day(s)" in held.skip_message  # 2 × 2³
        assert "backed off after 3 candidate(s) not promoted" in held.skip_message

        _trained(instance, "2013-06-19", PROMOTED)
        _trained(instance, "2013-06-25", NOT_PROMOTED)
        _trained(instance, "2013-06-27", NOT_PROMOTED)
        _evaluate(retrain_on_drift_sensor, instance, cursor, alerts=alerts)
        second = [json.loads(body) for body in received][1:]

    assert warning["severity"] == "warning" and warning["kind"] == "retraining_backoff" and warning["rejections"] == 2
    assert "the last 2 candidate(s) were not promoted" in warning["text"]
    assert len(second) == 1 and second[0]["severity"] == "warning", "a new streak after a promotion warns again"
