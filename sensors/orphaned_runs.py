"""orphaned_run_sensor: a run whose worker process died is reported failed, so automation goes on.

Run monitoring can only fail a dead run early when the run launcher has a worker health check, and
Dagster's ``DefaultRunLauncher`` has none: a run whose worker died with its code server (``kill -9``
of ``dagster dev``, an OOM kill of the group, a reboot) stays STARTED until ``max_runtime_seconds``,
and every sensor that waits for in-flight runs waits with it. This sensor does that check through
public APIs: the worker's pid comes from the run's own event log ("Started process for run (pid: N)"),
and a run whose worker is gone, a zombie, or a newer process that reused the pid is reported failed
(``DagsterInstance.report_run_failed``); the instance's run retries then re-execute it.

Only under ``DefaultRunLauncher``, whose workers are children of the code server that evaluates this
sensor, so the pid names a process on this host; other launchers (Kubernetes, ECS, Docker) run
workers elsewhere and bring their own health check.
"""

import dagster as dg

from infra import settings

_STARTED_PREFIX = "Started process for run"
_PID_REUSE_SLACK_S = 2.0
_MAX_RUNS_PER_TICK = 100


def worker_process(instance: dg.DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """The run worker's pid and when its start was logged, from the run's engine events; None if not yet."""
    events = instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
    for event in reversed(events):
        data = event.dagster_event.engine_event_data if event.dagster_event else None
        pid = data.metadata.get("pid") if data is not None else None
        if pid is not None and (event.message or "").startswith(_STARTED_PREFIX):
            return int(pid.value), event.timestamp
    return None


def process_health(pid: int, logged_at: float) -> tuple[bool, str]:
    """Whether ``pid`` is still the live process whose start was logged at ``logged_at``, and why not."""
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False, f"run worker process {pid} has exited (zombie)"
        if process.create_time() > logged_at + _PID_REUSE_SLACK_S:
            return False, f"run worker process {pid} is gone (the pid now belongs to a newer process)"
    except psutil.NoSuchProcess:
        return False, f"run worker process {pid} is gone (killed or crashed)"
    except psutil.AccessDenied:
        return True, f"run worker process {pid} exists (owned by another user)"
    return True, f"run worker process {pid} is alive"


def fail_orphaned_runs(instance: dg.DagsterInstance) -> list[str]:
    """Report every STARTED run whose worker process is gone as failed; the messages of those reported."""
    reported = []
    records = instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]), limit=_MAX_RUNS_PER_TICK)
    for record in records:
        run = record.dagster_run
        worker = worker_process(instance, run.run_id)
        if worker is None:
            continue
        alive, detail = process_health(*worker)
        if not alive:
            instance.report_run_failed(run, message=f"{detail}: run {run.run_id} failed (its worker died)")
            reported.append(f"{run.job_name} {run.run_id[:8]}: {detail}")
    return reported


@dg.sensor(
    minimum_interval_seconds=settings.sensors().interval_s or 15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="A run whose worker process died (kill -9, OOM, reboot) is reported failed, so automation goes on.",
)
def orphaned_run_sensor(context: dg.SensorEvaluationContext):
    if not isinstance(context.instance.run_launcher, dg.DefaultRunLauncher):
        return dg.SkipReason("run workers are not local processes here; the run launcher checks their health")
    reported = fail_orphaned_runs(context.instance)
    if not reported:
        return dg.SkipReason("every started run's worker is alive")
    return dg.SkipReason(f"reported {len(reported)} orphaned run(s) failed: " + "; ".join(reported))
