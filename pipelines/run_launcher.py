"""The local run launcher, with a health check so that run monitoring can fail a run whose worker died.

Dagster's ``DefaultRunLauncher`` starts each run in a process forked by the code server and cannot
tell run monitoring whether that process lives. When the run worker dies with its code server
(``kill -9`` of ``dagster dev``, an OOM kill of the group, a reboot), nothing ever marks the run
failed: it stays STARTED, and every sensor that waits for in-flight runs waits for ever. This
launcher finds the worker's pid in the run's own event log ("Started process for run (pid: N)")
and reports the worker failed once that process is gone, a zombie, or a newer process that reused
the pid. It is for one host (``deploy/dagster-local.yaml``); a deployment whose run workers live
elsewhere needs the launcher of that platform (Kubernetes, ECS, Docker), which brings its own check.
"""

from __future__ import annotations

import dagster as dg

# The one import from dagster._core: the health-check result types have no public export in 1.13
# (this launcher is the adapter; tests/test_deploy_configs.py pins its behaviour).
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus

_STARTED_PREFIX = "Started process for run"
_PID_REUSE_SLACK_S = 2.0


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


class LocalProcessRunLauncher(dg.DefaultRunLauncher):
    """``DefaultRunLauncher`` plus ``check_run_worker_health`` for run workers on this host."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        worker = worker_process(self._instance, run.run_id)
        if worker is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "run worker not started yet")
        alive, detail = process_health(*worker)
        return CheckRunHealthResult(WorkerStatus.RUNNING if alive else WorkerStatus.FAILED, detail)
