"""retrain_on_drift_sensor: failed drift/performance checks → one retraining, never a storm.

Storm control, in order: each failed check evaluation is considered once (the cursor holds the
newest evaluation id seen, and the run_key names the evaluation); nothing is requested while a
training run is queued or running (or about to be retried); nothing within ``RETRAIN_COOLDOWN_S`` of
the last training run's start, whatever its outcome, so a failing training is not retried in a
loop. The ``training`` and ``champion_promotion`` pools then bound what runs at once.
"""

import time

import dagster as dg

from assets.monitoring import DRIFT_CHECK, PERFORMANCE_CHECK
from ml import settings
from sensors.check_history import FAILED, PLANNED, CheckExecution, check_executions
from sensors.runs import TRAINING_JOB, in_flight_run

TRIGGER_CHECKS = (
    dg.AssetCheckKey(dg.AssetKey("drift_report"), DRIFT_CHECK),
    dg.AssetCheckKey(dg.AssetKey("model_performance"), PERFORMANCE_CHECK),
)


def retrain_cooldown_s() -> float:
    """``RETRAIN_COOLDOWN_S``: the least time between two retrainings the sensor starts (default 6 h)."""
    return settings.retrain_cooldown_s()


def _failed_evaluations(instance: dg.DagsterInstance, after_id: int, limit: int = 50):
    """Failed evaluations of the trigger checks newer than ``after_id``, and the next cursor.

    A bounded read of each check's newest executions. A planned execution is updated in place when
    it completes, so the cursor never moves past one still planned (unless its run has ended
    without evaluating it: a failed step).
    """
    failed, completed, planned = [], [], []
    for key in TRIGGER_CHECKS:
        for record in check_executions(instance, key, limit=limit):
            if record.id <= after_id:
                continue
            pending = record.status == PLANNED and not _run_finished(instance, record.run_id)
            (planned if pending else completed).append(record.id)
            if record.status == FAILED:
                failed.append(record)
    newest = max([after_id, *completed])
    if planned:
        newest = min(newest, min(planned) - 1)
    return sorted(failed, key=lambda r: r.id), newest


def _run_finished(instance: dg.DagsterInstance, run_id: str) -> bool:
    run = instance.get_run_by_id(run_id)
    return run is None or run.is_finished


def _evaluation_summary(record: CheckExecution) -> str:
    return f"{record.key.asset_key.to_user_string()}:{record.key.name} (run {record.run_id[:8]}): {record.description}"[:500]


@dg.sensor(
    job_name=TRAINING_JOB,
    minimum_interval_seconds=settings.sensor_interval_s(30),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="A failed drift_check or performance_check → one training_job run (cooldown, never two at once).",
)
def retrain_on_drift_sensor(context: dg.SensorEvaluationContext):
    after_id = int(context.cursor or 0)
    failed, newest = _failed_evaluations(context.instance, after_id)
    context.update_cursor(str(newest))
    if not failed:
        return dg.SkipReason(f"no failed drift/performance check since evaluation {after_id}")
    trigger = failed[-1]
    in_flight = in_flight_run(context.instance, TRAINING_JOB)
    if in_flight is not None:
        return dg.SkipReason(
            f"{len(failed)} failed check(s), newest {_evaluation_summary(trigger)}; training run "
            f"{in_flight.run_id[:8]} is already queued or running (or about to be retried)"
        )
    last = context.instance.get_run_records(dg.RunsFilter(job_name=TRAINING_JOB), limit=1)
    cooldown = retrain_cooldown_s()
    if last and time.time() - last[0].create_timestamp.timestamp() < cooldown:
        return dg.SkipReason(
            f"{len(failed)} failed check(s), newest {_evaluation_summary(trigger)}; within the {cooldown:.0f} s "
            f"cooldown after training run {last[0].dagster_run.run_id[:8]}"
        )
    return dg.RunRequest(
        run_key=f"retrain-after-check-evaluation-{trigger.id}",
        tags={
            "retrain/trigger": f"{trigger.key.asset_key.to_user_string()}:{trigger.key.name}",
            "retrain/trigger_run": trigger.run_id,
            "retrain/failed_evaluations": str(len(failed)),
        },
    )
