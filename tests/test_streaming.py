"""Real 2013 days through NATS JetStream, the stream processor and Redis: the batch rows, flight by flight.

Each test replays a day and the one before it (the late rates of the day read the day before), so a
few thousand real flights are compared. Servers are real: ``nats-server`` from the wheel (a fresh one
per test, its store in the test's folder) and the machine's Redis (a namespace per test).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import threading
import time

import orjson
import pytest

from ml.model import unit_digest
from streaming import broker
from streaming.broker import EmbeddedServer
from streaming.events import DEAD_LETTER_SUBJECT, REASON_HEADER
from streaming.predictions import read_predictions
from streaming.processor import reference_tables
from streaming.replay import events_between, publish
from streaming.state_store import StateStore
from tests.servers import wait_until
from tests.streaming_helpers import (assert_streamed_equal_batch, batch_rows, namespace, processor_process,
                                     redis_or_skip, run_processor, stream_count)

pytestmark = [pytest.mark.slow, pytest.mark.server]

SNOWSTORM = ("2013-02-07", "2013-02-08")
SUMMER = ("2013-07-01", "2013-07-02")


@pytest.fixture(scope="module")
def unit(tmp_path_factory):
    """(unit dir, digest, unit): a small real model trained on January."""
    from tests.serving_helpers import january_features, train_small_unit

    unit_dir, trained = train_small_unit(january_features(6), tmp_path_factory.mktemp("unit"))
    return unit_dir, unit_digest(unit_dir), trained


@pytest.fixture(scope="module")
def tables():
    return reference_tables()


@pytest.fixture
def redis_url():
    return redis_or_skip()


@pytest.fixture
def store(redis_url):
    store = StateStore(redis_url, namespace())
    yield store
    store.flush_namespace()


def _events(days, airports, ticks=False):
    return events_between(dt.date.fromisoformat(days[0]), dt.date.fromisoformat(days[1]), airports, ticks)


@pytest.mark.parametrize("days", [SNOWSTORM, SUMMER], ids=["snowstorm-02-08", "summer-07-02"])
def test_streamed_features_and_probabilities_equal_the_batch_rows(days, unit, tables, store, tmp_path):
    planes, airports = tables
    unit_dir, digest, trained = unit
    with EmbeddedServer(tmp_path / "nats") as server:
        summary = asyncio.run(publish(server.url, _events(days, airports), None))
        processor = run_processor(server.url, redis_or_skip(), store.namespace, unit_dir, digest)
        asyncio.run(processor.run())
        predictions = read_predictions(server.url)
    batch = batch_rows(*days, trained, planes, airports)
    assert summary.by_type["flight.scheduled"] == len(batch) > 1500
    assert_streamed_equal_batch(store, batch, predictions)
    _lookup_answers(store, batch, trained)


def _lookup_answers(store, batch, trained):
    """/predict_flight's decisions on the state the day left: by key alone, the batch probability; else why not."""
    from serving.live_lookup import look_up
    from streaming.events import FlightKey

    flight_id, row = next(batch.iterrows())
    key = FlightKey.parse_id(flight_id)
    answer = look_up(store, key, None, max_age_s=300)
    assert answer.status == 200
    assert abs(float(trained.predict_records([answer.features])[0]) - row["delay_probability"]) <= 1e-6
    cutoff = answer.cutoff
    early = look_up(store, key, cutoff - dt.timedelta(minutes=1), max_age_s=300)
    assert early.status == 425 and "cutoff" in early.message
    unknown = look_up(store, key.model_copy(update={"flight": 99999}), None, max_age_s=300)
    assert unknown.status == 404 and "99999" in unknown.message
    stale = look_up(store, key, None, max_age_s=300, now=time.time() + 3600)
    assert stale.status == 503 and stale.retry_after_s == 30
    ahead = look_up(store, key, dt.datetime(2013, 12, 31, tzinfo=dt.timezone.utc), max_age_s=300)
    assert ahead.status == 503 and "not as_of" in ahead.message


def test_a_processor_killed_mid_day_resumes_with_one_prediction_per_flight(unit, tables, store, tmp_path):
    """kill -9 while it scores the day at --speed max, start it again: none missing, none twice, features exact."""
    planes, airports = tables
    unit_dir, digest, trained = unit
    with EmbeddedServer(tmp_path / "nats") as server:
        asyncio.run(publish(server.url, _events(SNOWSTORM, airports), None))
        # small batches: the day takes the first process long enough to be killed in the middle of it
        first = processor_process(server.url, redis_or_skip(), store.namespace, unit_dir, digest, tmp_path / "p1.log",
                                  batch=40)
        try:
            wait_until(lambda: stream_count(server.url, broker.PREDICTIONS_STREAM) >= 300, "predictions under way",
                       timeout_s=60, diagnostics=lambda: (tmp_path / "p1.log").read_text()[-2000:])
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
        assert stream_count(server.url, broker.PREDICTIONS_STREAM) < 1862  # killed mid-day
        second = processor_process(server.url, redis_or_skip(), store.namespace, unit_dir, digest, tmp_path / "p2.log")
        assert second.wait(120) == 0, (tmp_path / "p2.log").read_text()[-2000:]
        predictions = read_predictions(server.url)
    assert_streamed_equal_batch(store, batch_rows(*SNOWSTORM, trained, planes, airports), predictions)


def test_a_flushed_store_is_rebuilt_from_the_stream(unit, tables, store, tmp_path):
    planes, airports = tables
    unit_dir, digest, trained = unit
    with EmbeddedServer(tmp_path / "nats") as server:
        events = _events(SNOWSTORM, airports)
        half = len(events) // 2
        asyncio.run(publish(server.url, events[:half], None))
        processor = run_processor(server.url, redis_or_skip(), store.namespace, unit_dir, digest, idle_exit_s=3.0)

        async def scenario():
            task = asyncio.create_task(processor.run())
            while processor.published == 0 or processor.state.watermark is None:
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)
            assert store.flush_namespace() > 0  # the store is lost mid-day
            await asyncio.to_thread(asyncio.run, publish(server.url, events[half:], None))
            await task

        asyncio.run(scenario())
        predictions = read_predictions(server.url)
    assert_streamed_equal_batch(store, batch_rows(*SNOWSTORM, trained, planes, airports), predictions)


def test_a_broker_restart_mid_day_loses_nothing(unit, tables, store, tmp_path):
    """The producer (paced) and the processor both reconnect to a broker restarted on the same port and store."""
    planes, airports = tables
    unit_dir, digest, trained = unit
    server = EmbeddedServer(tmp_path / "nats").start()
    try:
        events = _events(SNOWSTORM, airports)
        speed = (events[-1][0] - events[0][0]) * 60 / 8  # the two days in ~8 s
        published = {}
        producer = threading.Thread(target=lambda: published.update(
            summary=asyncio.run(publish(server.url, events, speed))))
        producer.start()
        processing = processor_process(server.url, redis_or_skip(), store.namespace, unit_dir, digest,
                                       tmp_path / "p.log", idle_exit_s=15.0)  # outlives a slow reconnect under load
        time.sleep(3)
        server.stop()
        time.sleep(1)
        server.start()
        producer.join(120)
        assert published["summary"].events == len(events)
        assert processing.wait(120) == 0, (tmp_path / "p.log").read_text()[-2000:]
        predictions = read_predictions(server.url)
        assert stream_count(server.url, broker.EVENTS_STREAM) == len(events)
    finally:
        server.stop()
    assert_streamed_equal_batch(store, batch_rows(*SNOWSTORM, trained, planes, airports), predictions)


def _malformed(events, count: int) -> list[tuple[str, bytes, dict]]:
    """``count`` bad messages of five kinds, each with its own message id."""
    departed = next(e for _, e in events if e.type == "flight.departed")
    weather = next(e for _, e in events if e.type == "weather.observed")
    early = departed.model_copy(update={"event_time": departed.event_time - dt.timedelta(days=3)})
    future = weather.model_copy(update={"event_time": dt.datetime(2099, 1, 1, tzinfo=dt.timezone.utc)})
    kinds = [
        b"{not json",
        orjson.dumps({"schema_version": 1, "type": "flight.boarded", "event_time": "2013-02-08T12:00:00Z"}),
        orjson.dumps({"schema_version": 1, "type": "flight.departed", "event_time": "2013-02-08T12:00:00Z"}),
        orjson.dumps(early.model_dump(mode="json")),
        orjson.dumps(future.model_dump(mode="json")),
    ]
    return [(f"airport.{'EWR' if i % 2 else 'JFK'}.junk", kinds[i % len(kinds)], {"Nats-Msg-Id": f"junk-{i}"})
            for i in range(count)]


def test_malformed_events_go_to_the_dead_letter_subject_with_their_reason(unit, tables, store, tmp_path):
    planes, airports = tables
    unit_dir, digest, trained = unit
    with EmbeddedServer(tmp_path / "nats") as server:
        events = _events(SNOWSTORM, airports)
        asyncio.run(publish(server.url, events[:2000], None))
        asyncio.run(publish(server.url, [], None, extra=_malformed(events, 1000)))
        asyncio.run(publish(server.url, events[2000:], None))
        processor = run_processor(server.url, redis_or_skip(), store.namespace, unit_dir, digest)
        asyncio.run(processor.run())
        predictions = read_predictions(server.url)
        reasons = asyncio.run(_dead_letters(server.url))
    assert len(reasons) == 1000
    for fragment in ("not JSON", "unknown event type 'flight.boarded'", "invalid flight.departed",
                     "minutes before its schedule", "2099-01-01T00:00:00+00:00 is"):
        assert sum(fragment in r for r in reasons) == 200, (fragment, reasons[:5])
    assert_streamed_equal_batch(store, batch_rows(*SNOWSTORM, trained, planes, airports), predictions)


async def _dead_letters(url: str) -> list[str]:
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    nc = await broker.connect(url, "dead-letters")
    js = nc.jetstream()
    sub = await js.pull_subscribe(DEAD_LETTER_SUBJECT, stream=broker.DEAD_LETTER_STREAM, config=ConsumerConfig(
        ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL))
    out = []
    while True:
        try:
            msgs = await sub.fetch(500, timeout=1)
        except Exception:
            break
        out += [m.headers[REASON_HEADER] for m in msgs]
    await nc.close()
    return out


def test_two_replicas_owning_disjoint_origins_make_one_replicas_predictions(unit, tables, redis_url, tmp_path):
    planes, airports = tables
    unit_dir, digest, trained = unit
    stores = [StateStore(redis_url, namespace()) for _ in range(2)]
    try:
        with EmbeddedServer(tmp_path / "nats") as server:
            asyncio.run(publish(server.url, _events(SUMMER, airports), None))
            replicas = [run_processor(server.url, redis_url, s.namespace, unit_dir, digest, idle_exit_s=2.0,
                                      origins=origins, durable=name)
                        for s, origins, name in zip(stores, (frozenset({"EWR"}), frozenset({"JFK", "LGA"})),
                                                    ("processor-EWR", "processor-JFK-LGA"))]

            async def both():
                await asyncio.gather(*(r.run() for r in replicas))

            asyncio.run(both())
            predictions = read_predictions(server.url)
        assert replicas[0].published > 500 and replicas[1].published > 500
        batch = batch_rows(*SUMMER, trained, planes, airports)
        by_origin = {True: batch[batch["origin"] == "EWR"], False: batch[batch["origin"] != "EWR"]}
        for store, ewr in zip(stores, (True, False)):
            mine = [p for p in predictions if (p.flight.origin == "EWR") == ewr]
            assert_streamed_equal_batch(store, by_origin[ewr], mine)
    finally:
        for s in stores:
            s.flush_namespace()


def test_a_new_champion_in_the_model_store_is_picked_up_and_an_unverifiable_one_refused(unit, caplog):
    """The processor's model source: the newest stored model, verified; no restart; a bad one never replaces it."""
    from streaming.champion import BentoModelStore
    from tests.serving_helpers import store_model

    unit_dir, _, _ = unit
    store_model(unit_dir, "41")
    source = BentoModelStore("flight_delay:latest", poll_s=0.0)
    assert source.current().version == "41"
    store_model(unit_dir, "42")
    with caplog.at_level("WARNING", logger="flightdelay.stream"):
        assert source.current().version == "42"
    assert "champion changed without a restart" in caplog.text and "(registry v42)" in caplog.text
    store_model(unit_dir, "43", digest="0" * 64)
    with caplog.at_level("ERROR", logger="flightdelay.stream"):
        assert source.current().version == "42"
    assert "refused, still scoring with" in caplog.text
