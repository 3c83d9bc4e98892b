"""Real days through broker, processor and store, and the batch rows they must equal (tests/test_streaming.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml.features import FEATURE_COLUMNS
from streaming import broker

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"


def redis_or_skip() -> str:
    """The machine's Redis URL; skipped with what to start where it is missing, failed under REQUIRE_REDIS=1 (CI)."""
    import redis

    from infra import settings

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        reason = f"no Redis at {REDIS_URL} ({exc}): start one (apt-get install redis-server) or set REDIS_URL"
        if settings.ci().require_redis:
            pytest.fail(f"REQUIRE_REDIS is set, but {reason}", pytrace=False)
        pytest.skip(reason)
    return REDIS_URL


def namespace() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def landing_frames(first: str, last: str, table: str) -> dict[str, pd.DataFrame]:
    from ml.reference_data import daily_csvs
    from streaming.day_events import read_csv_strings

    return {d.isoformat(): read_csv_strings(b) for d, b in
            daily_csvs(table, dt.date.fromisoformat(first), dt.date.fromisoformat(last))}


def batch_rows(first: str, last: str, unit, planes, airports) -> pd.DataFrame:
    """What the batch path makes of the landing files of ``first``..``last``: ``flight_features`` rows (late
    history folded from ``first``, as ``late_history`` does on a fresh lake) and ``batch_predictions``' probability."""
    from ml.contracts import FLIGHTS, WEATHER
    from ml.features import build_features
    from ml.history import history_states
    from ml.parsing import parse_landing_strings

    flights = {d: parse_landing_strings(f, FLIGHTS, d).frame for d, f in landing_frames(first, last, "flights").items()}
    weather = pd.concat([parse_landing_strings(w, WEATHER, d).frame
                         for d, w in landing_frames(first, last, "weather").items()], ignore_index=True)
    states = history_states(sorted(flights), flights, airports)
    rows = build_features(pd.concat(flights.values(), ignore_index=True), weather, planes, airports, states)
    rows["delay_probability"] = unit.predict_proba(rows).astype("float64")
    rows["flight_id"] = rows["date"] + "/" + rows["carrier"].astype(str) + "/" + rows["flight"].astype(str) + "/" + \
        rows["origin"].astype(str)
    return rows.set_index("flight_id")


def assert_streamed_equal_batch(store, batch: pd.DataFrame, predictions) -> None:
    """Every scheduled flight has exactly one prediction; its stored features equal the batch row (every column,
    ≤ 1e-9, nulls equal) and its probability the batch probability (≤ 1e-6: float32 over other batch shapes)."""
    ids = [p.flight.id() for p in predictions]
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} flights predicted twice"
    assert set(ids) == set(batch.index), (f"missing {sorted(set(batch.index) - set(ids))[:5]}, "
                                          f"extra {sorted(set(ids) - set(batch.index))[:5]}")
    published = {p.flight.id(): p for p in predictions}
    differences = []
    for flight_id, row in batch.iterrows():
        stored = store.prediction(row["date"], flight_id)
        assert stored is not None, f"{flight_id}: no features in the store"
        for column in FEATURE_COLUMNS:
            expected, got = row[column], stored.features[column]
            if pd.isna(expected) or got is None:
                same = pd.isna(expected) and got is None
            elif isinstance(expected, str) or isinstance(got, str):
                same = str(expected) == str(got)
            else:
                same = abs(float(expected) - float(got)) <= 1e-9
            if not same:
                differences.append((flight_id, column, expected, got))
        assert abs(published[flight_id].delay_probability - row["delay_probability"]) <= 1e-6, flight_id
        assert published[flight_id].feature_digest == stored.feature_digest
    assert not differences, f"{len(differences)} feature values differ, e.g. {differences[:5]}"


def run_processor(url: str, redis_url: str, ns: str, unit_dir: Path, digest: str, idle_exit_s: float = 1.0,
                  origins: frozenset[str] | None = None, durable: str = broker.PROCESSOR_DURABLE, stop_after=None):
    """The processor in this process until it has been idle ``idle_exit_s`` (or ``stop_after(processor)`` is true)."""
    from streaming.champion import UnitFolder
    from streaming.processor import Processor, ProcessorConfig, reference_tables

    planes, airports = reference_tables()
    config = ProcessorConfig(nats_url=url, redis_url=redis_url, namespace=ns, idle_exit_s=idle_exit_s,
                             origins=origins, durable=durable, ack_wait_s=2.0)
    return Processor(config, UnitFolder(unit_dir, digest, "1"), planes, airports)


def processor_process(url: str, redis_url: str, ns: str, unit_dir: Path, digest: str, log: Path,
                      idle_exit_s: float = 3.0, batch: int | None = None) -> subprocess.Popen:
    """``python -m streaming.processor`` as operators run it (a real process to kill)."""
    env = {**os.environ, "NATS_URL": url, "REDIS_URL": redis_url, "STREAM_STATE_NAMESPACE": ns,
           "STREAM_ACK_WAIT_S": "2", "STREAM_PREDICTION_LOG": "false"}
    return subprocess.Popen([sys.executable, "-m", "streaming.processor", "--unit-dir", str(unit_dir),
                             "--unit-digest", digest, "--model-version", "1", "--idle-exit-s", str(idle_exit_s),
                             *(["--batch", str(batch)] if batch else [])],
                            env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT)


def stream_count(url: str, stream: str) -> int:
    from streaming import broker

    async def count():
        nc = await broker.connect(url, "count")
        try:
            return (await nc.jetstream().stream_info(stream)).state.messages
        finally:
            await nc.close()

    return asyncio.run(count())
