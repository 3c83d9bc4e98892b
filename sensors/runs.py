"""What the sensors ask of the run history: which jobs they start, and whether one is still in flight."""

import dagster as dg

TRAINING_JOB = "training_job"
BENTO_JOB = "bento_job"
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING,
]
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
