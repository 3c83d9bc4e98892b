"""The closed loop: failed drift/performance checks → one retraining; a moved champion → a new Bento; alerts.

Storm control for retraining, in order: each failed check evaluation is considered once (the cursor
holds the newest evaluation id seen, and the run_key names the evaluation); nothing is requested
while a training run is queued or running; nothing within ``RETRAIN_COOLDOWN_S`` of the last
training run's start, whatever its outcome, so a failing training is not retried in a loop. The
``training`` and ``champion_promotion`` pools then bound what runs at once.
"""

import time

import dagster as dg

from assets.monitoring import DRIFT_CHECK, PERFORMANCE_CHECK
from ml.redaction import redact
from ml import settings
from resources.alerts import AlertWebhook
from resources.mlflow_registry import MlflowRegistry
from sensors.check_history import FAILED, PLANNED, CheckExecution, check_executions

TRAINING_JOB = "training_job"
BENTO_JOB = "bento_job"
TRIGGER_CHECKS = (
    dg.AssetCheckKey(dg.AssetKey("drift_report"), DRIFT_CHECK),
    dg.AssetCheckKey(dg.AssetKey("model_performance"), PERFORMANCE_CHECK),
)
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING,
]
BENTO_ATTEMPTS = 3
"""Builds of one champion the deploy sensor starts before it gives up (and the failure sensor has alerted)."""
WILL_RETRY_TAG = "dagster/will_retry"
RETRY_NUMBER_TAG = "dagster/retry_number"
_RECENT_FAILURES = 10


def in_flight_run(instance: dg.DagsterInstance, job_name: str) -> dg.DagsterRun | None:
    """A run of ``job_name`` that is queued or running, or failed and about to be retried by the daemon.

    A failed run tagged ``dagster/will_retry=true`` whose retry has not been launched yet is still in
    flight: its re-execution is coming, and starting another run beside it would make two.
    """
    running = instance.get_run_records(dg.RunsFilter(job_name=job_name, statuses=IN_FLIGHT), limit=1)
    if running:
        return running[0].dagster_run
    failed = instance.get_run_records(
        dg.RunsFilter(job_name=job_name, statuses=[dg.DagsterRunStatus.FAILURE]), limit=_RECENT_FAILURES
    )
    return next((r.dagster_run for r in failed if r.dagster_run.is_complete_and_waiting_to_retry), None)


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


@dg.sensor(
    job_name=BENTO_JOB,
    minimum_interval_seconds=settings.sensor_interval_s(60),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="The champion alias moved and the newest Bento does not serve it → build and parity-check one.",
)
def deploy_on_promotion_sensor(context: dg.SensorEvaluationContext, mlflow: MlflowRegistry):
    try:
        candidate = mlflow.champion()
    except Exception as exc:  # the registry is down: try again next tick
        return dg.SkipReason(f"registry unreachable: {redact(exc)}"[:300])
    if candidate is None:
        return dg.SkipReason("no champion yet")
    champion = candidate.version
    records = context.instance.fetch_materializations(dg.AssetKey("bento"), limit=1).records
    latest = records[0] if records else None
    built = latest.asset_materialization.metadata.get("model_version") if latest else None
    if built is not None and str(built.value) == champion:
        return dg.SkipReason(f"the newest Bento already serves champion v{champion}")
    for job in (TRAINING_JOB, BENTO_JOB):
        if in_flight_run(context.instance, job) is not None:
            return dg.SkipReason(f"{job} is queued or running; it may build the Bento for v{champion}")
    since = latest.storage_id if latest else 0
    # The daemon's re-executions of a build carry its tags: one attempt is one run group, however retried.
    attempts = {
        r.dagster_run.root_run_id or r.dagster_run.run_id
        for r in context.instance.get_run_records(
            dg.RunsFilter(job_name=BENTO_JOB, tags={"deploy/champion_version": champion, "deploy/after_bento": str(since)})
        )
    }
    if len(attempts) >= BENTO_ATTEMPTS:
        return dg.SkipReason(f"{len(attempts)} Bento builds for champion v{champion} failed; see run_failure_alert")
    return dg.RunRequest(
        # A new key per champion move (the newest Bento changes) and per attempt: a rollback redeploys,
        # a failed build is retried, at most BENTO_ATTEMPTS times.
        run_key=f"bento-for-champion-v{champion}-after-{since}-attempt-{len(attempts) + 1}",
        tags={"deploy/champion_version": champion, "deploy/after_bento": str(since)},
    )


@dg.run_failure_sensor(
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="A run that failed for good: an error in the daemon's log, and one POST to ALERT_WEBHOOK_URL when set.",
)
def run_failure_alert(context: dg.RunFailureSensorContext, alerts: AlertWebhook):
    """Alert once per failure that stays a failure.

    With run retries on, a failed run the daemon will re-execute is tagged ``dagster/will_retry=true``:
    it is not alerted; its last retry is (and says which retry it was). The message is redacted: an
    error's text can carry a URL with credentials.
    """
    run = context.dagster_run
    if run.tags.get(WILL_RETRY_TAG) == "true":
        context.log.info(f"run {run.run_id} of {run.job_name} failed and will be retried: no alert")
        return
    retry = run.tags.get(RETRY_NUMBER_TAG)
    message = redact(
        f"Dagster run {run.run_id} of {run.job_name} failed"
        f"{' (partition ' + run.tags['dagster/partition'] + ')' if 'dagster/partition' in run.tags else ''}"
        f"{' on retry ' + retry + ' of run ' + run.root_run_id if retry and run.root_run_id else ''}: "
        f"{context.failure_event.message or 'see the run log'}"
    )
    context.log.error(message)
    problem = alerts.post({"text": message, "run_id": run.run_id, "job": run.job_name})
    if problem:
        context.log.error(problem)
