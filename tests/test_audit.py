"""The audit log: append-only files, retention by whole files, SSE on S3, the service's buffered writer."""

import datetime as dt
import json
import os

import pytest

from infra import audit
from infra.audit import AuditLog, BufferedAuditLog, FsspecAuditStore
from resources.audit import AuditTrail
from resources.storage import LakeStorage


def _promotion(version: str, **extra) -> dict:
    return audit.record(audit.MODEL_PROMOTED, actor="dagster run abc", model_version=version, to_version=version,
                        from_version=None, reason="better", **extra)


def test_appends_never_rewrite_and_readers_keep_each_record_once(tmp_path):
    log = AuditLog(FsspecAuditStore(str(tmp_path / "audit")))
    first = _promotion("1")
    key = log.append([first])
    before = (tmp_path / "audit" / key).read_bytes()
    second = log.append([_promotion("2"), first])  # a writer that repeats a record (a retried tick)
    assert key != second and (tmp_path / "audit" / key).read_bytes() == before
    assert [r["model_version"] for r in log.records()] == ["1", "2"]
    assert log.records(audit.MODEL_TRAINED) == []
    assert log.append([]) is None and len(log.files()) == 2


def test_retention_deletes_whole_files_past_the_cutoff_only(tmp_path, monkeypatch):
    store = FsspecAuditStore(str(tmp_path / "audit"))
    log = AuditLog(store)
    today = dt.date(2026, 11, 26)
    old = f"date={today - dt.timedelta(days=31):%Y-%m-%d}/old.jsonl"
    edge = f"date={today - dt.timedelta(days=30):%Y-%m-%d}/edge.jsonl"
    for key in (old, edge):
        store.write_bytes(key, json.dumps(_promotion("1")).encode() + b"\n")
    store.write_bytes("notes/readme.txt", b"not an audit file")
    kept = log.append([_promotion("2")])
    assert log.expire(30, today) == [old]
    assert set(log.files()) == {edge, kept}
    assert (tmp_path / "audit" / "notes" / "readme.txt").exists()
    from infra import settings

    monkeypatch.setenv("AUDIT_RETENTION_DAYS", "0")
    with pytest.raises(ValueError, match="AUDIT_RETENTION_DAYS='0': expected a number of days, 1 or more"):
        settings.audit()


def test_records_need_an_event_and_an_actor_and_secrets_are_masked(tmp_path):
    with pytest.raises(ValueError, match="unknown event 'promoted'"):
        audit.record("promoted", actor="x")
    with pytest.raises(ValueError, match="needs an actor"):
        audit.record(audit.MODEL_PROMOTED, actor="")
    log = AuditLog(FsspecAuditStore(str(tmp_path / "audit")))
    with pytest.raises(ValueError, match="lacks"):
        log.append([{"event": audit.MODEL_PROMOTED}])
    log.append([_promotion("1", evidence={"mlflow": "http://alice:pa55word@mlflow:5000/#/runs/1"})])
    (stored,) = log.records()
    assert "pa55word" not in json.dumps(stored) and stored["evidence"]["mlflow"].startswith("http://***@mlflow")


def test_token_id_is_a_short_hash_never_the_token():
    token = "a-very-secret-bearer-token"
    ident = audit.token_id(token)
    assert ident.startswith("sha256:") and len(ident) == len("sha256:") + 12 and token not in ident
    assert ident == audit.token_id(token) != audit.token_id(token + "x")
    assert audit.token_id(None) == "anonymous"


def test_buffered_writer_keeps_records_when_storage_fails_and_writes_them_later(tmp_path):
    class Flaky(FsspecAuditStore):
        failing = True

        def write_bytes(self, key, data):
            if self.failing:
                raise OSError("storage down: token=abc123")
            super().write_bytes(key, data)

    store = Flaky(str(tmp_path / "audit"))
    writer = BufferedAuditLog(AuditLog(store), flush_seconds=3600, max_buffer=3)
    for version in "1234":
        writer.add(_promotion(version))
    assert writer.flush() == 0 and writer.dropped == 1  # the oldest goes when the cap is reached
    store.failing = False
    writer.add(_promotion("5"))
    writer.close()
    assert [r["model_version"] for r in AuditLog(store).records()] == ["2", "3", "4", "5"]


def test_audit_files_on_s3_are_encrypted_at_rest(s3_endpoint, monkeypatch):
    """Both writers (the Dagster resource through LakeStorage, the service's fsspec store) request SSE."""
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="audit-bucket")
    monkeypatch.setenv("AUDIT_URL", "s3://audit-bucket/audit")
    monkeypatch.setenv("LAKE_SSE", "AES256")
    trail = AuditTrail.from_settings()
    assert trail.storage.url == "s3://audit-bucket/audit" and trail.storage.sse == "AES256"
    dagster_key = trail.write([_promotion("1")])
    service_key = audit.open_audit_log().append([_promotion("2")])
    for key in (dagster_key, service_key):
        head = client.head_object(Bucket="audit-bucket", Key=f"audit/{key}")
        assert head["ServerSideEncryption"] == "AES256", key
    assert [r["model_version"] for r in trail.records()] == ["1", "2"]
    assert [r["model_version"] for r in audit.open_audit_log().records()] == ["1", "2"]


def test_each_test_has_its_own_audit_log(tmp_path):
    """tests/conftest.py: AUDIT_URL points into this test's folder, so no test reads another's records."""
    assert os.environ["AUDIT_URL"].startswith(str(tmp_path))
    assert audit.open_audit_log().records() == []


def test_trail_resource_writes_through_the_lake_storage(tmp_path):
    trail = AuditTrail(storage=LakeStorage(url=str(tmp_path / "trail")), retention_days=7)
    key = trail.write([_promotion("1")])
    assert (tmp_path / "trail" / key).is_file()
    assert not list((tmp_path / "trail").rglob(".*"))  # no temporaries left beside it
    assert trail.expire() == []


def _registered(registry, count: int) -> list[str]:
    client = registry.client()
    client.create_registered_model(registry.model_name)
    return [str(client.create_model_version(registry.model_name, source=f"file:///m/{i}").version) for i in range(count)]


def test_sensor_tells_promotions_from_rollbacks_and_moves_by_hand(mlflow_registry, tmp_path):
    """Stand-ins with the real asset key (the sensor reads materializations by key) and a real registry."""
    import dagster as dg

    from sensors.audit import audit_trail_sensor

    v1, v2, v3 = _registered(mlflow_registry, 3)
    trail = AuditTrail(storage=LakeStorage(url=str(tmp_path / "trail")))

    def tick(instance, cursor):
        with dg.build_sensor_context(instance=instance, cursor=cursor,
                                     resources={"audit_trail": trail, "registry": mlflow_registry}) as context:
            return audit_trail_sensor.evaluate_tick(context).cursor

    def set_champion(version, by, why):
        client = mlflow_registry.client()
        client.set_registered_model_alias(mlflow_registry.model_name, "champion", version)
        client.set_model_version_tag(mlflow_registry.model_name, version, "promoted_by", by)
        client.set_model_version_tag(mlflow_registry.model_name, version, "promotion_reason", why)

    @dg.asset(name="champion_model")
    def promoted_v1():
        return dg.MaterializeResult(metadata={"champion_version": v1, "previous_version": "none", "reason": "beats baseline"})

    with dg.instance_for_test() as instance:
        cursor = tick(instance, None)
        set_champion(v1, "dagster run 1234", "beats baseline")
        cursor = tick(instance, cursor)  # the run's materialization is not in the event log yet: wait for it
        assert trail.records() == []
        run = dg.materialize([promoted_v1], instance=instance)
        cursor = tick(instance, cursor)
        set_champion(v2, "bob", "hotfix model")
        cursor = tick(instance, cursor)
        set_champion(v1, "rollback by carol", "v2 misbehaves")
        cursor = tick(instance, cursor)
        assert tick(instance, cursor) == cursor
    records = trail.records()
    summary = [(r["event"], r["from_version"], r["to_version"], r["actor"], r["reason"]) for r in records]
    assert summary == [
        (audit.MODEL_PROMOTED, None, v1, f"dagster run {run.run_id}", "beats baseline"),
        (audit.CHAMPION_MOVED, v1, v2, "bob", "hotfix model"),
        (audit.MODEL_ROLLED_BACK, v2, v1, "rollback by carol", "v2 misbehaves"),
    ]
    assert records[0]["id"].startswith("dagster-event-")  # stable: a re-read event is kept once
    assert v3 not in {r["to_version"] for r in records}
