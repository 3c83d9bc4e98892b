"""The audit sensor and the audit trail command on a real run: train, promote, deploy, supersede, roll back."""

import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from assets.features import flight_features
from assets.inference import bento
from assets.training import champion_model, delay_model, training_set
from infra import audit
from resources.audit import AuditTrail
from resources.bento_store import BentoStore
from resources.mlflow_registry import CHAMPION_ALIAS
from sensors.audit import UNKNOWN_ACTOR, audit_trail_sensor
from tests.conftest import chain_resources

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
FAST_TRAINING = {"ops": {"delay_model": {"config": {"epochs": 4, "patience": 2}}}}


def _tick(instance, registry, cursor=None):
    with dg.build_sensor_context(instance=instance, cursor=cursor,
                                 resources={"audit_trail": AuditTrail.from_settings(), "registry": registry}) as context:
        result = audit_trail_sensor.evaluate_tick(context)
    assert "audit records written" in (result.skip_message or ""), result.skip_message
    return result.cursor


def _trail(version: str) -> str:
    done = subprocess.run([sys.executable, "-m", "pipelines.audit_trail", version], cwd=ROOT, env={**os.environ},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_model_versions_life_from_a_replayed_run(featured_lake, mlflow_registry, tmp_path):
    lake, instance = featured_lake
    resources = {**chain_resources(lake, mlflow_registry),
                 "bentos": BentoStore(bentoml_home=str(tmp_path / "bentoml"), prediction_log_url=str(tmp_path / "pred"))}

    def run(assets, run_config=FAST_TRAINING):
        result = dg.materialize([flight_features.to_source_asset(), *assets], selection=assets, resources=resources,
                                instance=instance, run_config=run_config, raise_on_error=False)
        assert result.success, [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]
        return result

    first = run([training_set, delay_model, champion_model, bento])
    cursor = _tick(instance, mlflow_registry)
    # what the service writes per served batch (serving/service.py), here for the champion v1
    served = audit.open_audit_log()
    for rows in (3, 5):
        served.append([audit.record(audit.BATCH_SERVED, actor="caller sha256:0123456789ab", token_id="sha256:0123456789ab",
                                    request_id=f"req-{rows}", prediction_ids=[f"p{i}" for i in range(rows)], rows=rows,
                                    model_version="1")])
    # the same window again: promoted only because no margin is asked of it here (docs/retraining-policy.md)
    any_gain = {"ops": {"delay_model": {"config": {**FAST_TRAINING["ops"]["delay_model"]["config"], "promotion_margin": -1.0}}}}
    second = run([training_set, delay_model, champion_model], any_gain)
    cursor = _tick(instance, mlflow_registry, cursor)
    # a rollback as deploy/README.md describes it: the alias moved back by hand, who and why in tags
    client = mlflow_registry.client()
    client.set_registered_model_alias(mlflow_registry.model_name, CHAMPION_ALIAS, "1")
    client.set_model_version_tag(mlflow_registry.model_name, "1", "promoted_by", "rollback by alice")
    client.set_model_version_tag(mlflow_registry.model_name, "1", "promotion_reason", "v2 worse on live traffic")
    cursor = _tick(instance, mlflow_registry, cursor)
    assert _tick(instance, mlflow_registry, cursor) == cursor  # nothing new: nothing written, nothing moved

    records = AuditTrail.from_settings().records()
    kinds = [(r["event"], r.get("model_version")) for r in records if r["event"] != audit.BATCH_SERVED]
    assert kinds == [(audit.MODEL_TRAINED, "1"), (audit.MODEL_PROMOTED, "1"), (audit.BENTO_DEPLOYED, "1"),
                     (audit.MODEL_TRAINED, "2"), (audit.MODEL_PROMOTED, "2"), (audit.MODEL_ROLLED_BACK, "1")]
    promoted_v2 = next(r for r in records if r["event"] == audit.MODEL_PROMOTED and r["model_version"] == "2")
    assert promoted_v2["from_version"] == "1" and promoted_v2["actor"].startswith(f"dagster run {second.run_id}")
    assert promoted_v2["evidence"]["passed_checks"] and promoted_v2["evidence"]["evaluated_against"] == "1"
    assert "ROC AUC" in promoted_v2["reason"]
    rollback = records[-1]
    assert (rollback["from_version"], rollback["to_version"], rollback["actor"]) == ("2", "1", "rollback by alice")

    v1 = _trail("1")
    lines = v1.splitlines()
    assert lines[0] == "model version 1"
    order = ["trained", "promoted", "deployed", "superseded", "restored by rollback"]
    found = [next(i for i, line in enumerate(lines) if re.match(rf"  \S+  {label}\s", line)) for label in order]
    assert found == sorted(found), v1
    assert f"dagster run {first.run_id}" in v1 and "passed its checks" in v1
    assert "first champion" in v1 and "champion v1 → v2" in v1 and "v2 worse on live traffic" in v1
    bento_tag = first.asset_materializations_for_node("bento")[0].metadata["bento_tag"].value
    assert f"Bento {bento_tag}" in v1
    # the bento asset's parity check serves the Bento over HTTP too: its batches are audited under its own token
    served_line = next(line for line in lines if line.startswith("  served "))
    batches, rows = map(int, re.match(r"  served (\d+) batches, (\d+) rows", served_line).groups())
    assert batches >= 3 and rows > 8 and "sha256:0123456789ab" in served_line

    v2 = _trail("2")
    assert "promoted" in v2 and "over v1" in v2 and "rolled back" in v2 and "champion v2 → v1" in v2
    assert "served no online batches" in v2
    assert "nothing in the audit log" in _trail("99")


def test_sensor_and_schedule_state_changes_are_recorded(monkeypatch, tmp_path):
    """Stopped and started the way the UI does it (the instance's own calls on a loaded code location)."""
    from dagster._core.test_utils import create_test_daemon_workspace_context
    from dagster._core.workspace.load_target import ModuleTarget

    from sensors.audit import AuditCursor, instigator_changes

    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    with dg.instance_for_test() as instance:
        target = ModuleTarget(module_name="pipelines.definitions", attribute="defs", working_directory=str(ROOT),
                              location_name="flight_delay")
        with create_test_daemon_workspace_context(target, instance) as workspace:
            location = next(iter(workspace.create_request_context().code_locations))
            repository = next(iter(location.get_repositories().values()))
            sensor = repository.get_sensor("landing_zone_sensor")
            schedule = repository.get_schedule("daily_monitoring_schedule")
            cursor = AuditCursor()
            assert instigator_changes(instance, cursor) == [] and cursor.instigators == {}
            instance.stop_sensor(sensor.get_remote_origin_id(), sensor.selector_id, sensor)
            instance.start_schedule(schedule)
            stopped = instigator_changes(instance, cursor)
            instance.start_sensor(sensor)
            started = instigator_changes(instance, cursor)
    summary = [(r["instigator"], r["kind"], r["from_status"], r["to_status"]) for r in stopped + started]
    assert summary == [("daily_monitoring_schedule", "schedule", None, "RUNNING"),
                       ("landing_zone_sensor", "sensor", None, "STOPPED"),
                       ("landing_zone_sensor", "sensor", "STOPPED", "RUNNING")]
    assert {r["actor"] for r in stopped + started} == {UNKNOWN_ACTOR}
