"""The audit log as a Dagster resource: ``infra.audit.AuditLog`` written through the lake's storage resource."""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

from infra import settings
from infra.audit import AuditLog
from resources.storage import LakeStorage


class _LakeAuditStore:
    """``infra.audit.AuditStore`` over ``LakeStorage``: S3 puts with SSE, or whole-file local writes."""

    def __init__(self, storage: LakeStorage):
        self.storage = storage

    def write_bytes(self, key: str, data: bytes) -> None:
        self.storage.write_bytes(key, data)

    def read_bytes(self, key: str) -> bytes:
        return self.storage.read_bytes(key)

    def keys(self) -> list[str]:
        return [stored.key for stored in self.storage.list("")]

    def delete(self, key: str) -> None:
        self.storage.delete(key)


class AuditTrail(dg.ConfigurableResource):
    """The append-only audit log (``AUDIT_URL``; ``audit/`` in the lake by default), kept ``retention_days``.

    ``storage`` is a ``LakeStorage`` rooted at the log (the lake's endpoint, region and SSE), so the
    audit files are encrypted at rest like everything else in the lake.
    """

    storage: LakeStorage
    retention_days: int = 400

    @classmethod
    def from_settings(cls) -> AuditTrail:
        audit = settings.audit()
        return cls(storage=LakeStorage.from_settings(settings.lake().under(audit.url)), retention_days=audit.retention_days)

    def log(self) -> AuditLog:
        return AuditLog(_LakeAuditStore(self.storage))

    def write(self, records: list[Mapping]) -> str | None:
        """Store ``records`` (built with ``infra.audit.record``) as one new file; its key."""
        return self.log().append(list(records))

    def records(self, event: str | None = None) -> list[dict]:
        return self.log().records(event)

    def expire(self) -> list[str]:
        """Delete the audit files older than ``retention_days``; the keys deleted."""
        return self.log().expire(self.retention_days)
