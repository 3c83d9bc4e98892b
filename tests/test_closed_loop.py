"""The loop with a real `dagster-daemon`: a drifted day → exactly one training run → a new champion and Bento."""

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

pytestmark = pytest.mark.slow
PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def demo_environment(local_instance_env, monkeypatch):
    """The local instance environment (tests/conftest.py)."""
    return local_instance_env


def _run(job: str, first: str, last: str, instance):
    """In process, with resources from this test's environment (the module-level defs were bound at import)."""
    from pipelines.definitions import build_definitions
    from pipelines.runner import run_job_over_range

    return run_job_over_range(job, first, last, instance, defs=build_definitions())


def _training_runs(instance):
    return instance.get_run_records(dg.RunsFilter(job_name="training_job"))


def test_a_drifted_day_leads_to_one_training_run_and_a_new_champion(demo_environment):
    from pipelines.replay import replay
    from resources import lake_storage_from_env, mlflow_registry_from_env

    storage, registry = lake_storage_from_env(), mlflow_registry_from_env()
    instance = dg.DagsterInstance.get()

    replay(storage, dt.date(2013, 1, 1), dt.date(2013, 1, 21))
    for job in ("ingest_job", "features_job", "training_job"):
        assert _run(job, "2013-01-01", "2013-01-21", instance).success, job
    assert registry.champion_version() == "1"

    replay(storage, dt.date(2013, 7, 1), dt.date(2013, 7, 31))
    for job in ("ingest_job", "features_job", "batch_predictions_job"):
        assert _run(job, "2013-07-01", "2013-07-31", instance).success, job
    monitoring = _run("monitoring_job", "2013-07-31", "2013-07-31", instance)
    checks = {c.check: c for c in monitoring.checks}
    assert not checks["drift_check"].passed, "a July day against a January champion drifts"
    performance = instance.get_latest_materialization_event(dg.AssetKey("model_performance"))
    metadata = performance.asset_materialization.metadata
    assert metadata["source"].value == "batch predictions" and 0.5 < metadata["roc_auc"].value < 1.0
    assert len(_training_runs(instance)) == 1  # the bootstrap's, in process

    log = open(demo_environment / "daemon.log", "w")
    daemon = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(PROJECT_ROOT / "workspace.yaml")],
        cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            launched = [r for r in _training_runs(instance) if "retrain/trigger" in r.dagster_run.tags]
            if launched and instance.get_run_by_id(launched[0].dagster_run.run_id).is_finished:
                break
            time.sleep(2)
        else:
            pytest.fail(f"no retraining finished in time: {(demo_environment / 'daemon.log').read_text()[-3000:]}")
        time.sleep(15)  # three more sensor ticks: still one retraining (the evaluation fires once)
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(timeout=60)
        log.close()

    launched = [r for r in _training_runs(instance) if "retrain/trigger" in r.dagster_run.tags]
    assert len(launched) == 1
    run = instance.get_run_by_id(launched[0].dagster_run.run_id)
    # Drift (and usually decay) failed on that day: however many failed evaluations, one retraining.
    assert run.tags["retrain/trigger"] in {"drift_report:drift_check", "model_performance:performance_check"}
    assert int(run.tags["retrain/failed_evaluations"]) >= 1
    assert run.status == dg.DagsterRunStatus.SUCCESS, (demo_environment / "daemon.log").read_text()[-3000:]
    assert registry.champion_version() == "2"
    bento = instance.get_latest_materialization_event(dg.AssetKey("bento")).asset_materialization.metadata
    assert bento["model_version"].value == "2"
