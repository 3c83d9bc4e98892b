"""The live state in Redis: the one module that knows its keys, used by the processor and the service's lookup.

What is kept, under a namespace (``STREAM_STATE_NAMESPACE``, default ``flightdelay``):

- ``{ns}:events:{day}``: hash, message id → the event's JSON, for every flight and weather event of the
  day still in the window. The processor's memory is derived from it (a restart replays it), so a
  write is idempotent: the same event twice is the same field and value.
- ``{ns}:features:{day}``: hash, flight id → the features at the flight's cutoff, its probability, the
  model version and the feature digest: what ``/predict_flight`` reads.
- ``{ns}:meta``: hash with the watermark (minutes since 1970 UTC, event time), the wall time of the
  last write, and the epoch marker whose absence means the store was lost (flushed, a new instance).

Redis was chosen over JetStream's key-value store by measurement (docs/streaming.md): one HGET per
lookup, pipelined writes per fetched batch, and a namespace that flushes as one.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import orjson

DEFAULT_NAMESPACE = "flightdelay"


@dataclass(frozen=True)
class StoredPrediction:
    """A flight's features at its cutoff with what the processor published for it."""

    features: dict[str, object]
    cutoff_minute: int
    delay_probability: float
    model_version: str
    feature_digest: str


@dataclass(frozen=True)
class Freshness:
    watermark_minute: int | None
    updated_at: float | None
    """Wall time (epoch seconds) of the processor's last write."""


class StateStore:
    """Synchronous redis-py client over one namespace; writes are batched until ``commit``."""

    def __init__(self, url: str, namespace: str = DEFAULT_NAMESPACE):
        import redis

        self.namespace = namespace
        self.client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
        self._pipe = self.client.pipeline(transaction=True)
        self._staged = 0
        self._hashes: dict[str, dict[str, bytes]] = {}
        self._days: set[str] = set()
        self._meta: dict[str, object] = {}

    def _key(self, *parts: str) -> str:
        return ":".join((self.namespace, *parts))

    def ping(self) -> None:
        self.client.ping()

    # processor side
    def stage_event(self, day: str, msg_id: str, data: bytes) -> None:
        self._hashes.setdefault(self._key("events", day), {})[msg_id] = data
        self._days.add(day)
        self._staged += 1

    def stage_prediction(self, day: str, flight_id: str, prediction: StoredPrediction) -> None:
        self._hashes.setdefault(self._key("features", day), {})[flight_id] = orjson.dumps(
            prediction.__dict__, option=orjson.OPT_SERIALIZE_NUMPY)
        self._staged += 1

    def stage_watermark(self, minute: int) -> None:
        self._meta = {"watermark": minute, "updated_at": time.time()}
        self._staged += 1

    def forget_days(self, days: list[str]) -> None:
        for day in days:
            self._pipe.delete(self._key("events", day), self._key("features", day))
            self._pipe.srem(self._key("days"), day)

    def commit(self) -> None:
        """Write what was staged as one transaction (MULTI/EXEC: a processor killed mid-write leaves all or
        nothing of it), the watermark last; raises when Redis refused it, so nothing is acked."""
        for key, mapping in self._hashes.items():
            self._pipe.hset(key, mapping=mapping)
        if self._days:
            self._pipe.sadd(self._key("days"), *sorted(self._days))
        if self._meta:
            self._pipe.hset(self._key("meta"), mapping=self._meta)
        if self._staged:
            self._pipe.execute()
        self._pipe = self.client.pipeline(transaction=True)
        self._staged = 0
        self._hashes, self._days, self._meta = {}, set(), {}

    def epoch(self) -> str | None:
        value = self.client.hget(self._key("meta"), "epoch")
        return value.decode() if value else None

    def start_epoch(self) -> str:
        epoch = uuid.uuid4().hex
        self.client.hset(self._key("meta"), "epoch", epoch)
        return epoch

    def days(self) -> list[str]:
        return sorted(d.decode() for d in self.client.smembers(self._key("days")))

    def events(self, day: str) -> list[bytes]:
        return list(self.client.hgetall(self._key("events", day)).values())

    def published(self, day: str) -> set[str]:
        return {k.decode() for k in self.client.hkeys(self._key("features", day))}

    def size(self) -> dict[str, int]:
        """Keys of the namespace and the bytes Redis reports for them (a scan: metrics, not the hot path)."""
        keys = list(self.client.scan_iter(match=self._key("*"), count=1000))
        used = sum(self.client.memory_usage(k) or 0 for k in keys)
        return {"keys": len(keys), "bytes": int(used)}

    # lookup side
    def prediction(self, day: str, flight_id: str) -> StoredPrediction | None:
        value = self.client.hget(self._key("features", day), flight_id)
        return StoredPrediction(**orjson.loads(value)) if value else None

    def has_event(self, day: str, msg_id: str) -> bool:
        return bool(self.client.hexists(self._key("events", day), msg_id))

    def freshness(self) -> Freshness:
        watermark, updated = self.client.hmget(self._key("meta"), "watermark", "updated_at")
        return Freshness(int(watermark) if watermark else None, float(updated) if updated else None)

    def flush_namespace(self) -> int:
        """Delete every key of the namespace (tests and operators: a lost store)."""
        keys = list(self.client.scan_iter(match=self._key("*"), count=1000))
        return self.client.delete(*keys) if keys else 0
