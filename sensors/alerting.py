"""run_failure_alert: one alert per run that failed for good (not for one the daemon will retry)."""

import dagster as dg

from infra.redaction import redact
from resources.alerts import AlertWebhook
from sensors.runs import RETRY_NUMBER_TAG, WILL_RETRY_TAG

FAILURE_SEVERITY = "error"
"""A run that failed for good; the retraining backoff's one warning is ``warning`` (sensors/retraining.py)."""


@dg.run_failure_sensor(
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="A run that failed for good: an error in the daemon's log, and one POST to ALERT_WEBHOOK_URL when set.",
)
def run_failure_alert(context: dg.RunFailureSensorContext, alerts: AlertWebhook):
    """Alert once per failure that stays a failure.

    With run retries on, a failed run the daemon will re-execute is tagged ``dagster/will_retry=true``:
    it is not alerted; its last retry is (and says which retry it was). The message is redacted: an
    error's text can carry a URL with credentials. A candidate the champion gate did not promote
    is not a failure (the training run succeeds), so it never reaches this sensor.
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
    problem = alerts.post({"text": message, "severity": FAILURE_SEVERITY, "run_id": run.run_id, "job": run.job_name})
    if problem:
        context.log.error(problem)
