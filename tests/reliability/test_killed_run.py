"""kill -9 of the whole local stack mid-run: orphaned_run_sensor fails the orphaned run, and automation goes on.

Before: the local instance had no run monitoring and the default launcher has no health check, so a run
whose processes died stayed STARTED for ever, and the retrain sensor skipped every tick waiting for it.
"""

import datetime as dt
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import psutil
import pytest

from tests.check_stand_ins import check_result_stand_in
from tests.servers import wait_until

pytestmark = pytest.mark.slow
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DAYS = ("2013-01-01", "2013-01-10")


@pytest.fixture
def local_stack(local_instance_env, monkeypatch):
    """The local instance environment (tests/conftest.py), with 3 s sensor ticks; drift alone retrains at once.

    The retraining policy (ml/retraining_policy.py) waits for new labelled days after drift: this test is
    about the killed run, so each failed drift check may start a training.
    """
    monkeypatch.setenv("SENSOR_INTERVAL_S", "3")
    monkeypatch.setenv("RETRAIN_DRIFT_MIN_NEW_DAYS", "0")
    return local_instance_env


def _start_daemon(log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(PROJECT_ROOT / "workspace.yaml")],
        cwd=PROJECT_ROOT, stdout=open(log, "a"), stderr=subprocess.STDOUT, start_new_session=True,
    )


def _kill_tree(daemon: subprocess.Popen) -> None:
    """SIGKILL the daemon and every process under it at once: code server, run worker, Dask workers."""
    try:
        processes = [psutil.Process(daemon.pid), *psutil.Process(daemon.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        processes = []
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    daemon.wait(timeout=30)
    psutil.wait_procs(processes, timeout=30)


def _wait_for(predicate, what: str, log: Path, timeout_s: float = 300):
    return wait_until(predicate, what, timeout_s, diagnostics=lambda: log.read_text()[-3000:])


def _failed_drift_check(instance):
    stand_in = check_result_stand_in("drift_report", "drift_check", passed=False, description="share 1.0 (stand-in)")
    dg.materialize([stand_in], instance=instance, raise_on_error=False)


def _training_runs(instance) -> list[dg.DagsterRun]:
    return [r.dagster_run for r in instance.get_run_records(dg.RunsFilter(job_name="training_job"), ascending=True)]


def _step_started(instance, run_id: str) -> bool:
    return bool(instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_START, limit=1).records)


def test_a_killed_run_is_reported_failed_and_automation_resumes(local_stack):
    from pipelines.definitions import build_definitions
    from pipelines.replay import replay
    from sensors.orphaned_runs import worker_process
    from pipelines.runner import run_job_over_range
    from resources import lake_storage_from_env

    instance = dg.DagsterInstance.get()
    replay(lake_storage_from_env(), *(dt.date.fromisoformat(d) for d in DAYS))
    defs = build_definitions()
    for job in ("ingest_job", "features_job"):
        assert run_job_over_range(job, *DAYS, instance, defs=defs).success, job
    _failed_drift_check(instance)

    log = local_stack / "daemon.log"
    daemon = _start_daemon(log)
    try:
        first = _wait_for(lambda: next(iter(_training_runs(instance)), None), "the sensor's training run", log)
        _wait_for(lambda: _step_started(instance, first.run_id), "a step of the training run started", log)
        worker_pid, _ = worker_process(instance, first.run_id)
        _kill_tree(daemon)
        assert not psutil.pid_exists(worker_pid) or psutil.Process(worker_pid).status() == psutil.STATUS_ZOMBIE
        assert instance.get_run_by_id(first.run_id).status == dg.DagsterRunStatus.STARTED, "orphaned, still STARTED"

        daemon = _start_daemon(log)
        restarted = time.monotonic()
        _wait_for(lambda: instance.get_run_by_id(first.run_id).is_finished, "orphaned_run_sensor fails the orphan", log,
                  timeout_s=120)
        detected_s = time.monotonic() - restarted
        failed = instance.get_run_by_id(first.run_id)
        assert failed.status == dg.DagsterRunStatus.FAILURE
        messages = [e.message for e in instance.all_logs(first.run_id) if e.message]
        assert any(f"run worker process {worker_pid} is gone" in m for m in messages), "failed by orphaned_run_sensor"
        print(f"killed run marked FAILURE {detected_s:.1f} s after the daemon restarted (sensor ticks every 3 s)")

        # Run retries re-execute a run lost to infrastructure, once; the sensor waits for that retry.
        retry = _wait_for(lambda: next((r for r in _training_runs(instance) if r.parent_run_id == first.run_id), None),
                          "the daemon's retry of the killed run", log)
        assert retry.tags.get("dagster/retry_number") == "1"
        _wait_for(lambda: instance.get_run_by_id(retry.run_id).is_finished, "the retry finishes", log, timeout_s=600)
        _failed_drift_check(instance)  # drift again: the sensor, no longer waiting on anything, starts a training
        resumed = _wait_for(
            lambda: next((r for r in _training_runs(instance) if r.run_id not in {first.run_id, retry.run_id}), None),
            "the retrain sensor starts its run", log,
        )
        assert "retrain/trigger" in resumed.tags and resumed.parent_run_id is None
        created = {r.dagster_run.run_id: r.create_timestamp for r in instance.get_run_records(
            dg.RunsFilter(job_name="training_job"))}
        finished = instance.get_run_record_by_id(retry.run_id).end_time
        assert created[resumed.run_id].timestamp() >= finished, "never two trainings at once"
    finally:
        _kill_tree(daemon)
