"""retrain_on_drift_sensor: failed drift/performance checks → a retraining when it can help, never a storm.

Storm control, in order: each failed check evaluation is considered once (the cursor holds the
newest evaluation id seen, and the run_key names the evaluation); nothing is requested while a
training run is queued or running (or about to be retried). Then the retraining policy
(`ml/retraining_policy.py`, docs/retraining-policy.md) decides: within ``RETRAIN_COOLDOWN_S`` of the
last training run's start, whatever its outcome, nothing; a failed performance check retrains once
new labelled data has arrived; drift alone only once ``RETRAIN_DRIFT_MIN_NEW_DAYS`` labelled days
have; each consecutive candidate not promoted doubles what it waits for, and the streak raises one
warning through the alert webhook. Its reasons are the skip messages and the run's ``retrain/`` tags.
The ``training`` and ``champion_promotion`` pools then bound what runs at once.
"""

import json
import time
from dataclasses import dataclass

import dagster as dg

from assets.monitoring import DRIFT_CHECK, PERFORMANCE_CHECK
from assets.run_tags import RetrainRequestTags, TrainingOutcome, TrainingRunTags
from infra import settings
from infra.redaction import redact
from ml.retraining_policy import DRIFT, PERFORMANCE, LoopState, PolicySettings, backoff_warning, decide
from resources.alerts import AlertWebhook
from sensors.check_history import FAILED, PLANNED, CheckExecution, check_executions
from sensors.runs import TRAINING_JOB, in_flight_run

PERFORMANCE_KEY = dg.AssetCheckKey(dg.AssetKey("model_performance"), PERFORMANCE_CHECK)
TRIGGER_CHECKS = (
    dg.AssetCheckKey(dg.AssetKey("drift_report"), DRIFT_CHECK),
    PERFORMANCE_KEY,
)
BACKOFF_SEVERITY = "warning"
"""The backoff warning's severity in the webhook payload (run failures are ``error``)."""
_HISTORY = 50
"""Training runs read to find the rejection streak (a longer streak is capped by the backoff anyway)."""


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


@dataclass
class Cursor:
    """The newest check evaluation seen, and the rejection streak already warned about (its first run id)."""

    after_id: int = 0
    warned_streak: str = ""

    @classmethod
    def parse(cls, text: str | None) -> "Cursor":
        if not text:
            return cls()
        if text.isdigit():  # the cursor before the policy: the evaluation id alone
            return cls(int(text))
        data = json.loads(text)
        return cls(int(data.get("after_id", 0)), str(data.get("warned_streak", "")))

    def dump(self) -> str:
        return json.dumps({"after_id": self.after_id, "warned_streak": self.warned_streak})


@dataclass(frozen=True)
class TrainingHistory:
    last_start_s: float | None
    rejections: int
    streak_id: str
    """The oldest run of the current rejection streak ("" when there is none)."""


def training_history(instance: dg.DagsterInstance) -> TrainingHistory:
    """When the newest training started, and the candidates not promoted since the last promotion.

    Runs without an outcome tag (failed before champion_model, or still running) neither extend nor
    end a streak: they say nothing about whether a new model can beat the champion.
    """
    records = instance.get_run_records(dg.RunsFilter(job_name=TRAINING_JOB), limit=_HISTORY)
    rejections, streak_id = 0, ""
    for record in records:
        recorded = TrainingRunTags.parse(record.dagster_run.tags)
        outcome = recorded.outcome if recorded else None
        if outcome == TrainingOutcome.PROMOTED:
            break
        if outcome == TrainingOutcome.NOT_PROMOTED:
            rejections, streak_id = rejections + 1, record.dagster_run.run_id
    last = records[0].create_timestamp.timestamp() if records else None
    return TrainingHistory(last, rejections, streak_id)


def newest_window_last_day(instance: dg.DagsterInstance) -> str | None:
    """The last day of the newest training window built, whatever became of its candidate."""
    event = instance.get_latest_materialization_event(dg.AssetKey("training_set"))
    metadata = event.asset_materialization.metadata if event and event.asset_materialization else {}
    return str(metadata["last_day"].value) if "last_day" in metadata else None


def labelled_days(instance: dg.DagsterInstance) -> tuple[str, ...]:
    """Days whose features (and so labels: the flights have arrived) are materialized."""
    return tuple(instance.get_materialized_partitions(dg.AssetKey("flight_features")))


def policy_settings() -> PolicySettings:
    retraining = settings.retraining()
    return PolicySettings(
        cooldown_s=retraining.cooldown_s,
        drift_min_new_days=retraining.drift_min_new_days,
        performance_min_new_days=retraining.performance_min_new_days,
        max_new_days=retraining.backoff_max_days,
        warn_after_rejections=retraining.warn_after_rejections,
    )


def _warn_once(context: dg.SensorEvaluationContext, alerts: AlertWebhook, history: TrainingHistory,
               cursor: Cursor, policy: PolicySettings) -> None:
    """Raise the backoff warning the first time this rejection streak reaches the threshold."""
    if not history.streak_id or history.streak_id == cursor.warned_streak:
        return
    champion = _champion_version(context.instance)
    warning = backoff_warning(history.rejections, champion, policy)
    if warning is None:
        return
    context.log.warning(warning)
    problem = alerts.post({"text": warning, "severity": BACKOFF_SEVERITY, "kind": "retraining_backoff",
                           "rejections": history.rejections, "champion_version": champion or "none"})
    if problem:
        context.log.error(problem)
    cursor.warned_streak = history.streak_id


def _champion_version(instance: dg.DagsterInstance) -> str | None:
    event = instance.get_latest_materialization_event(dg.AssetKey("champion_model"))
    metadata = event.asset_materialization.metadata if event and event.asset_materialization else {}
    return str(metadata["champion_version"].value) if "champion_version" in metadata else None


@dg.sensor(
    job_name=TRAINING_JOB,
    minimum_interval_seconds=settings.sensors().interval_s or 30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="A failed performance_check, or a drift_check once enough new labelled days arrived → one "
                "training_job run (cooldown, backoff after rejections, never two at once).",
)
def retrain_on_drift_sensor(context: dg.SensorEvaluationContext, alerts: AlertWebhook):
    cursor = Cursor.parse(context.cursor)
    after_id = cursor.after_id
    failed, cursor.after_id = _failed_evaluations(context.instance, after_id)
    policy = policy_settings()
    history = training_history(context.instance)
    _warn_once(context, alerts, history, cursor, policy)
    context.update_cursor(cursor.dump())
    if not failed:
        return dg.SkipReason(f"no failed drift/performance check since evaluation {after_id}")
    trigger = failed[-1]
    in_flight = in_flight_run(context.instance, TRAINING_JOB)
    if in_flight is not None:
        return dg.SkipReason(
            f"{len(failed)} failed check(s), newest {_evaluation_summary(trigger)}; training run "
            f"{in_flight.run_id[:8]} is already queued or running (or about to be retried)"
        )
    performance = [r for r in failed if r.key == PERFORMANCE_KEY]
    if performance:  # realised performance first
        trigger = performance[-1]
    decision = decide(
        LoopState(
            trigger=PERFORMANCE if performance else DRIFT,
            now_s=time.time(),
            last_training_start_s=history.last_start_s,
            window_last_day=newest_window_last_day(context.instance),
            labelled_days=labelled_days(context.instance),
            rejections=history.rejections,
        ),
        policy,
    )
    if not decision.retrain:
        return dg.SkipReason(f"{len(failed)} failed check(s), newest {_evaluation_summary(trigger)}; "
                             f"not retraining: {decision.reason}"[:1000])
    return dg.RunRequest(
        run_key=f"retrain-after-check-evaluation-{trigger.id}",
        tags=RetrainRequestTags(
            trigger=f"{trigger.key.asset_key.to_user_string()}:{trigger.key.name}",
            trigger_run=trigger.run_id,
            failed_evaluations=len(failed),
            policy=redact(decision.reason),
            new_labelled_days=decision.new_days,
            required_new_days=decision.required_new_days,
            rejections_before=history.rejections,
        ).format(),
    )
