"""The audit log: append-only records of who changed what, stored as JSON Lines files in the lake.

Every write is a new file, ``date=YYYY-MM-DD/<UTC time>-<random>.jsonl`` under the log's root: no
record is ever rewritten, and two writers (the service's workers, the Dagster sensor) never touch the
same file. Retention deletes whole files whose date is past ``retention_days``; nothing else deletes.
Readers take every file, drop repeated record ids (a writer that retries after a lost answer may store
a record twice) and sort by time.

Framework-free: the service writes its records through ``BufferedAuditLog`` with an fsspec store
(``FsspecAuditStore``: S3 with the lake's SSE, or a folder); the pipeline writes through the lake's
storage resource (``resources/audit.py``). Both speak the small ``AuditStore`` protocol.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import threading
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from infra.periodic_flush import PeriodicFlush
from infra.redaction import redact

logger = logging.getLogger(__name__)

MODEL_TRAINED = "model_trained"
MODEL_PROMOTED = "model_promoted"
MODEL_ROLLED_BACK = "model_rolled_back"
CHAMPION_MOVED = "champion_moved"
"""The alias moved outside Dagster to a version that was never champion (a promotion by hand)."""
BENTO_DEPLOYED = "bento_deployed"
BENTO_EXPORTED = "bento_exported"
INSTIGATOR_STATE_CHANGED = "instigator_state_changed"
BATCH_SERVED = "batch_served"
EVENTS = (MODEL_TRAINED, MODEL_PROMOTED, MODEL_ROLLED_BACK, CHAMPION_MOVED, BENTO_DEPLOYED, BENTO_EXPORTED,
          INSTIGATOR_STATE_CHANGED, BATCH_SERVED)

_FILE = re.compile(r"^date=(?P<day>\d{4}-\d{2}-\d{2})/[^/.][^/]*\.jsonl$")


class AuditStore(Protocol):
    """Where audit files go; keys are relative to the log's root."""

    def write_bytes(self, key: str, data: bytes) -> None: ...

    def read_bytes(self, key: str) -> bytes: ...

    def keys(self) -> list[str]: ...

    def delete(self, key: str) -> None: ...


def token_id(token: str | None) -> str:
    """A caller's id derived from its bearer token: the first 12 hex digits of its SHA-256, never the token.

    Enough to tell callers (and a rotated token) apart in the audit log; useless for calling the service.
    ``anonymous`` where authentication is disabled.
    """
    if not token:
        return "anonymous"
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:12]


def now_utc() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")


def record(event: str, actor: str, *, at: str | None = None, record_id: str | None = None, **fields: Any) -> dict:
    """One audit record: what happened (``event``), who or what did it (``actor``), when, and the details.

    ``record_id`` makes a record idempotent: a writer that records the same fact twice (a sensor
    re-reading the event log after a lost cursor) gives it the same id and readers keep one.
    """
    if event not in EVENTS:
        raise ValueError(f"audit: unknown event {event!r}; expected one of {', '.join(EVENTS)}")
    if not actor:
        raise ValueError(f"audit: a {event} record needs an actor (who or what did it)")
    return {"id": record_id or uuid.uuid4().hex, "at": at or now_utc(), "event": event, "actor": actor, **fields}


def _scrubbed(value: Any) -> Any:
    """``value`` with every string passed through ``redact``: evidence can carry URIs and messages."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {str(k): _scrubbed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrubbed(v) for v in value]
    return value


def _jsonl(records: Iterable[Mapping]) -> bytes:
    return "".join(json.dumps(_scrubbed(r), sort_keys=True, default=str) + "\n" for r in records).encode()


class AuditLog:
    """Append records, read them back, expire old files: the only code that knows the log's layout."""

    def __init__(self, store: AuditStore):
        self.store = store

    def append(self, records: list[Mapping]) -> str | None:
        """Store ``records`` as one new file (nothing when empty); returns its key."""
        if not records:
            return None
        for r in records:
            missing = {"id", "at", "event", "actor"} - set(r)
            if missing:
                raise ValueError(f"audit: record {dict(r)!r} lacks {sorted(missing)}; build it with infra.audit.record")
        now = dt.datetime.now(dt.timezone.utc)
        key = f"date={now:%Y-%m-%d}/{now:%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:12]}.jsonl"
        self.store.write_bytes(key, _jsonl(records))
        return key

    def files(self) -> dict[str, dt.date]:
        """``{key: day written}`` of every audit file; anything else under the root is ignored."""
        found = {}
        for key in self.store.keys():
            match = _FILE.match(key)
            if match:
                found[key] = dt.date.fromisoformat(match["day"])
        return found

    def records(self, event: str | None = None) -> list[dict]:
        """Every record kept (of one ``event`` if given), oldest first, each id once."""
        seen, out = set(), []
        for key in sorted(self.files()):
            for line in self.store.read_bytes(key).decode().splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                if item["id"] in seen or (event and item["event"] != event):
                    continue
                seen.add(item["id"])
                out.append(item)
        return sorted(out, key=lambda r: r["at"])

    def expire(self, retention_days: int, today: dt.date | None = None) -> list[str]:
        """Delete the files written more than ``retention_days`` days before ``today``; the keys deleted.

        Whole files only: a kept file is never opened for writing, so retention cannot alter a record.
        """
        today = today or dt.datetime.now(dt.timezone.utc).date()
        cutoff = today - dt.timedelta(days=retention_days)
        expired = sorted(key for key, day in self.files().items() if day < cutoff)
        for key in expired:
            self.store.delete(key)
        return expired


class FsspecAuditStore:
    """An audit store at ``url`` (a folder, or ``s3://…`` with the lake's endpoint, region and SSE).

    Local files are written aside and renamed, so a reader never sees half a file.
    """

    def __init__(self, url: str, lake=None):
        import fsspec

        from infra import settings

        self.url = url
        if url.startswith("s3://"):
            options = (lake or settings.lake()).under(url).fsspec_options()
            self.fs, self.root, self.local = fsspec.filesystem("s3", **options), url[len("s3://"):].rstrip("/"), False
        else:
            self.fs, self.root, self.local = fsspec.filesystem("file"), str(Path(url).resolve()), True

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        if not self.local:
            self.fs.pipe_file(path, data)
            return
        folder, name = path.rsplit("/", 1)
        self.fs.makedirs(folder, exist_ok=True)
        partial = f"{folder}/.{name}.partial"
        self.fs.pipe_file(partial, data)
        self.fs.mv(partial, path)

    def read_bytes(self, key: str) -> bytes:
        return self.fs.cat_file(self._path(key))

    def keys(self) -> list[str]:
        if not self.fs.exists(self.root):
            return []
        self.fs.invalidate_cache()
        start = len(self.root) + 1
        return sorted(p[start:] if p.startswith(self.root) else p for p in self.fs.find(self.root))

    def delete(self, key: str) -> None:
        self.fs.rm_file(self._path(key))


class BufferedAuditLog(PeriodicFlush):
    """The service's writer: ``add`` queues a record, a background thread writes a file per flush.

    Requests never wait for storage. A failed write keeps its records for the next flush, up to
    ``max_buffer`` records (beyond that the oldest are dropped, counted in ``dropped`` and logged).
    ``close`` writes what is left.
    """

    def __init__(self, log: AuditLog, flush_seconds: float = 5.0, flush_records: int = 1000, max_buffer: int = 100_000):
        self.log = log
        self.flush_seconds = flush_seconds
        self.flush_records = flush_records
        self.max_buffer = max_buffer
        self.dropped = 0
        self._records: list[dict] = []
        self._lock = threading.Lock()
        self._start_flushing("audit log", logger)

    def add(self, item: dict) -> None:
        with self._lock:
            self._records.append(item)
            if len(self._records) >= self.flush_records:
                self._wake.set()

    def flush(self) -> int:
        """Write what is queued now as one file; the records written (0 when the write failed)."""
        with self._lock:
            taken, self._records = self._records, []
        if not taken:
            return 0
        try:
            self.log.append(taken)
            return len(taken)
        except Exception as error:
            with self._lock:
                kept = taken + self._records
                overflow = max(len(kept) - self.max_buffer, 0)
                self.dropped += overflow
                self._records = kept[overflow:]
            logger.error("audit log: writing %d records failed (%s); kept for the next flush, %d dropped in all",
                         len(taken), redact(error), self.dropped)
            return 0



def open_audit_log(url: str | None = None) -> AuditLog:
    """The audit log at ``url`` (default ``AUDIT_URL``) through fsspec: for code without the Dagster resource."""
    from infra import settings

    return AuditLog(FsspecAuditStore(url or settings.audit().url))
