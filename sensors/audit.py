"""audit_trail_sensor: what the pipeline did to models, Bentos and automation, copied into the audit log.

The facts already live in Dagster's event log (materializations of ``delay_model``, ``champion_model``,
``bento``, ``bento_release``), the registry (the ``champion`` alias) and the instance (sensor and
schedule states). The sensor reads each source from where its cursor stopped and appends one audit
file per tick: a daemon that was down catches up, and no asset needs the audit log to run. Records
from the event log carry the event's id and time, so re-reading after a lost cursor repeats nothing
readers keep. Once a day it also deletes audit files past ``AUDIT_RETENTION_DAYS``.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field

import dagster as dg

from infra import audit
from infra import settings
from infra.redaction import redact
from resources.audit import AuditTrail
from resources.mlflow_registry import MlflowRegistry

WATCHED_ASSETS = ("delay_model", "champion_model", "bento", "bento_release")
UNKNOWN_ACTOR = "unknown (changed outside Dagster runs; the open-source instance records no user)"
_BATCH = 100


@dataclass
class AuditCursor:
    """Where each source was read up to, and what was seen last."""

    after: dict[str, int] = field(default_factory=dict)
    """Per watched asset: the storage id of the last materialization recorded."""
    champion: str | None = None
    champions: list[str] = field(default_factory=list)
    """Every version that has been champion: an alias moving back to one of them is a rollback."""
    instigators: dict[str, str] | None = None
    expired_on: str | None = None

    @classmethod
    def parse(cls, raw: str | None) -> AuditCursor:
        return cls(**json.loads(raw)) if raw else cls()

    def dump(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def _value(metadata, key: str, default=None):
    entry = metadata.get(key)
    return default if entry is None else getattr(entry, "value", entry)


def _run_actor(instance: dg.DagsterInstance, run_id: str) -> str:
    """``dagster run <id>`` and what launched it (a sensor, a schedule, a backfill, a user in the UI)."""
    run = instance.get_run_by_id(run_id)
    tags = run.tags if run else {}
    by = next((f"{name.split('/')[-1]} {tags[name]}" for name in
               ("dagster/sensor_name", "dagster/schedule_name", "dagster/backfill", "user") if name in tags), None)
    return f"dagster run {run_id}" + (f" (launched by {by})" if by else "")


def _model_evidence(registry: MlflowRegistry, version: str) -> dict:
    candidate = registry.candidate(version)
    return {
        "passed_checks": candidate.passed, "rejection_reason": candidate.reason or None,
        "test_roc_auc": candidate.test_roc_auc, "baseline_test_roc_auc": candidate.baseline_roc_auc,
        "champion_test_roc_auc": candidate.champion_roc_auc, "evaluated_against": candidate.evaluated_against,
        "mlflow_run_id": candidate.run_id, "data_fingerprint": candidate.data_fingerprint,
        "unit_sha256": candidate.unit_digest, "champion_gain": candidate.champion_gain,
    }


def records_from_materialization(asset: str, event, instance: dg.DagsterInstance, registry: MlflowRegistry,
                                 cursor: AuditCursor) -> list[dict]:
    """The audit records one materialization stands for (none for a Bento that was not exported)."""
    metadata = event.asset_materialization.metadata
    common = {"record_id": f"dagster-event-{event.storage_id}",
              "at": dt.datetime.fromtimestamp(event.timestamp, dt.timezone.utc).isoformat(timespec="microseconds"),
              "actor": _run_actor(instance, event.run_id), "dagster_run_id": event.run_id}
    if asset == "delay_model":
        version = str(_value(metadata, "model_version"))
        return [audit.record(audit.MODEL_TRAINED, model_version=version, evidence=_model_evidence(registry, version),
                             **common)]
    if asset == "champion_model":
        version = str(_value(metadata, "champion_version"))
        previous = _value(metadata, "previous_version", "none")
        cursor.champion = version
        if version not in cursor.champions:
            cursor.champions.append(version)
        return [audit.record(audit.MODEL_PROMOTED, model_version=version, to_version=version,
                             from_version=None if previous == "none" else str(previous),
                             reason=_value(metadata, "reason"), evidence=_model_evidence(registry, version), **common)]
    if asset == "bento":
        return [audit.record(audit.BENTO_DEPLOYED, model_version=str(_value(metadata, "model_version")),
                             bento_tag=_value(metadata, "bento_tag"), bentoml_model=_value(metadata, "bentoml_model"),
                             **common)]
    if asset == "bento_release" and _value(metadata, "exported"):
        tag = str(_value(metadata, "bento_tag"))
        return [audit.record(audit.BENTO_EXPORTED, bento_tag=tag, export_uri=str(_value(metadata, "export_uri")),
                             sha256=_value(metadata, "sha256"), image=_value(metadata, "image"), **common)]
    return []


def champion_move(registry: MlflowRegistry, cursor: AuditCursor) -> list[dict]:
    """A record for an alias move no ``champion_model`` run explains: a rollback, or a promotion by hand.

    A move to a version promoted by a Dagster run that is not yet in the event log waits for its
    materialization (next tick), so a promotion is never recorded twice.
    """
    current = registry.champion_version()
    if current is None or current == cursor.champion:
        return []
    tags = registry.client().get_model_version(registry.model_name, current).tags
    promoted_by = tags.get("promoted_by", "")
    rollback = current in cursor.champions
    if not rollback and promoted_by.startswith("dagster run "):
        return []
    previous, cursor.champion = cursor.champion, current
    if current not in cursor.champions:
        cursor.champions.append(current)
    by_hand = promoted_by and not promoted_by.startswith("dagster run ")
    return [audit.record(
        audit.MODEL_ROLLED_BACK if rollback else audit.CHAMPION_MOVED,
        actor=promoted_by if by_hand else UNKNOWN_ACTOR,
        model_version=current, to_version=current, from_version=previous,
        reason=(tags.get("promotion_reason") if by_hand else None) or "alias moved outside Dagster; no reason recorded",
        evidence={"observed": "champion alias", **_model_evidence(registry, current)},
    )]


def instigator_changes(instance: dg.DagsterInstance, cursor: AuditCursor) -> list[dict]:
    """Records for sensors and schedules whose stored state changed since the last tick.

    The first tick only learns the states. A state that appears as ``DECLARED_IN_CODE`` is Dagster
    taking note of a default, not a person's change, and is not recorded. An instance without
    schedule storage (an ephemeral one) has no states to watch.
    """
    if instance.schedule_storage is None:
        return []
    now = {f"{s.instigator_type.value.lower()}:{s.name}": s.status.value for s in instance.all_instigator_state()}
    known, cursor.instigators = cursor.instigators, now
    if known is None:
        return []
    out = []
    for key, status in sorted(now.items()):
        before = known.get(key)
        if before == status or (before is None and status == "DECLARED_IN_CODE"):
            continue
        kind, _, name = key.partition(":")
        out.append(audit.record(audit.INSTIGATOR_STATE_CHANGED, actor=UNKNOWN_ACTOR, instigator=name, kind=kind,
                                from_status=before, to_status=status))
    return out


def audit_tick(instance: dg.DagsterInstance, audit_trail: AuditTrail, registry: MlflowRegistry,
               cursor: AuditCursor, today: dt.date | None = None) -> tuple[list[dict], list[str]]:
    """One tick's work: read every source, append the records as one file; (records, expired keys).

    ``cursor`` is advanced in place; the caller stores it only after the records are written.
    """
    records = []
    for asset in WATCHED_ASSETS:
        found = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), after_storage_id=cursor.after.get(asset)),
            limit=_BATCH, ascending=True,
        ).records
        for event in found:
            records.extend(records_from_materialization(asset, event, instance, registry, cursor))
            cursor.after[asset] = event.storage_id
    records.extend(champion_move(registry, cursor))
    records.extend(instigator_changes(instance, cursor))
    audit_trail.write(sorted(records, key=lambda r: r["at"]))
    expired = []
    today = today or dt.datetime.now(dt.timezone.utc).date()
    if cursor.expired_on != today.isoformat():
        expired = audit_trail.log().expire(audit_trail.retention_days, today)
        cursor.expired_on = today.isoformat()
    return records, expired


@dg.sensor(
    minimum_interval_seconds=settings.sensors().interval_s or 60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Copies trainings, promotions, rollbacks, Bento builds and exports, and sensor/schedule state "
                "changes into the append-only audit log; expires audit files past AUDIT_RETENTION_DAYS.",
)
def audit_trail_sensor(context: dg.SensorEvaluationContext, audit_trail: AuditTrail, registry: MlflowRegistry):
    cursor = AuditCursor.parse(context.cursor)
    try:
        records, expired = audit_tick(context.instance, audit_trail, registry, cursor)
    except Exception as exc:  # the registry or the lake is down: nothing advanced, the next tick retries
        return dg.SkipReason(f"audit log not updated: {redact(exc)}"[:300])
    context.update_cursor(cursor.dump())
    return dg.SkipReason(f"{len(records)} audit records written, {len(expired)} expired files deleted")
