"""streamed_predictions and its lag check: what the stream processor published, observed by Dagster.

The decision is tested as a function; the asset against a real ``nats-server`` (from the wheel), to which
the test publishes predictions the way the processor does (``Nats-Msg-Id`` per flight), one twice.
"""

import asyncio
import datetime as dt

import dagster as dg
import pytest

from assets.streaming import CONSUMER_CHECK, stream_consumer_keeps_up, streamed_predictions
from streaming.lag import FRESHNESS_MINUTES, MAX_PENDING_EVENTS, consumer_lag_verdict
from resources.parquet_io import Warehouse
from resources.stream import PREDICTION_COLUMNS, AirportStream
from streaming.broker import PROCESSOR_DURABLE
from tests.conftest import resources_for

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
CAUGHT_UP = {"pending": 0, "ack_pending": 0, "ack_floor": 100}


# the decision
def test_a_caught_up_processor_with_a_fresh_prediction_passes():
    verdict = consumer_lag_verdict(CAUGHT_UP, NOW - dt.timedelta(minutes=2), NOW)
    assert verdict.passed, verdict.description


def test_no_consumer_means_no_processor_has_consumed_the_stream():
    verdict = consumer_lag_verdict(None, NOW, NOW)
    assert not verdict.passed
    assert "no processor has consumed the stream" in verdict.description


def test_too_many_pending_events_fail():
    state = {**CAUGHT_UP, "pending": MAX_PENDING_EVENTS + 1}
    verdict = consumer_lag_verdict(state, NOW, NOW)
    assert not verdict.passed and "events wait for the processor" in verdict.description
    assert consumer_lag_verdict({**CAUGHT_UP, "pending": MAX_PENDING_EVENTS}, NOW, NOW).passed


def test_a_stale_or_missing_newest_prediction_fails_and_the_bound_is_configurable():
    old = NOW - dt.timedelta(minutes=FRESHNESS_MINUTES + 1)
    verdict = consumer_lag_verdict(CAUGHT_UP, old, NOW)
    assert not verdict.passed and "newest prediction is 16.0 min old" in verdict.description
    assert consumer_lag_verdict(CAUGHT_UP, old, NOW, freshness=dt.timedelta(hours=1)).passed
    assert "no prediction has been published" in consumer_lag_verdict(CAUGHT_UP, None, NOW).description


def test_every_failing_reason_is_named():
    verdict = consumer_lag_verdict({**CAUGHT_UP, "pending": 10_000}, NOW - dt.timedelta(hours=2), NOW)
    assert "10,000 events" in verdict.description and "120.0 min old" in verdict.description


# the asset without a broker
def test_without_nats_url_the_asset_fails_saying_what_to_set(lake):
    with pytest.raises(dg.Failure, match="NATS_URL is not set"):
        dg.materialize([streamed_predictions], partition_key="2013-01-01",
                       resources={**resources_for(lake), "stream": AirportStream(nats_url=None)})


def test_the_default_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("NATS_URL", "nats://broker.internal:4222")
    assert AirportStream().nats_url == "nats://broker.internal:4222"
    monkeypatch.delenv("NATS_URL")
    assert AirportStream().nats_url is None


def test_an_unreachable_broker_fails_fast_without_naming_credentials(lake):
    from streaming.broker import free_port

    stream = AirportStream(nats_url=f"nats://user:secret@127.0.0.1:{free_port()}", connect_timeout_s=1)
    with pytest.raises(ConnectionError) as raised:
        stream.consumer_state()
    assert "127.0.0.1" in str(raised.value) and "secret" not in str(raised.value)


# the asset against a real broker
DAY, OTHER_DAY = "2013-03-04", "2013-03-05"


def _prediction(day: str, carrier: str, flight: int, origin: str, published_at: dt.datetime, probability: float):
    from streaming.events import FlightKey, Prediction

    date = dt.date.fromisoformat(day)
    return Prediction(
        flight=FlightKey(date=date, carrier=carrier, flight=flight, origin=origin),
        cutoff=dt.datetime.combine(date, dt.time(6, 0), dt.timezone.utc),
        delay_probability=probability, model_version="7", feature_digest=f"digest-{carrier}{flight}",
        published_at=published_at,
    )


async def _publish(url: str, predictions) -> None:
    """As ``streaming.processor`` publishes: one subject per day and origin, the flight's message id."""
    from streaming import broker
    from streaming.events import MSG_ID_HEADER, encode, prediction_subject

    nc = await broker.connect(url, "test-publisher")
    try:
        js = nc.jetstream()
        await broker.ensure_streams(js)
        futures = [await js.publish_async(prediction_subject(p), encode(p), headers={MSG_ID_HEADER: p.msg_id()})
                   for p in predictions]
        await asyncio.gather(*futures)
    finally:
        await nc.close()


async def _add_processor_consumer(url: str) -> None:
    """The durable consumer a stream processor creates on the airport's events (it has consumed everything: none)."""
    from nats.js.api import AckPolicy, ConsumerConfig

    from streaming import broker

    nc = await broker.connect(url, "test-consumer")
    try:
        await nc.jetstream().add_consumer(broker.EVENTS_STREAM, ConsumerConfig(
            durable_name=PROCESSOR_DURABLE, ack_policy=AckPolicy.ALL))
    finally:
        await nc.close()


def _run(lake, url: str, **check_config) -> tuple[dg.ExecuteInProcessResult, dg.AssetCheckEvaluation]:
    result = dg.materialize(
        [streamed_predictions, stream_consumer_keeps_up], partition_key=DAY,
        resources={**resources_for(lake), "stream": AirportStream(nats_url=url)},
        run_config={"ops": {f"streamed_predictions_{CONSUMER_CHECK}": {"config": check_config}}} if check_config else None,
    )
    assert result.success
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == CONSUMER_CHECK and evaluation.severity == dg.AssetCheckSeverity.WARN
    return result, evaluation


@pytest.mark.server
def test_the_days_flights_once_each_and_the_lag_check(lake, tmp_path):
    from streaming.broker import EmbeddedServer
    from streaming.predictions import read_predictions

    now = dt.datetime.now(dt.timezone.utc)
    first = _prediction(DAY, "UA", 1545, "EWR", now - dt.timedelta(minutes=3), 0.25)
    day = [first,
           _prediction(DAY, "AA", 1141, "JFK", now - dt.timedelta(minutes=2), 0.5),
           _prediction(DAY, "B6", 725, "JFK", now - dt.timedelta(minutes=1), 0.75)]
    republished = first.model_copy(update={"published_at": now, "delay_probability": 0.9})  # a restarted processor
    other_day = [_prediction(OTHER_DAY, "UA", 1545, "EWR", now - dt.timedelta(minutes=4), 0.1),
                 _prediction(OTHER_DAY, "DL", 461, "LGA", now - dt.timedelta(minutes=4), 0.2)]

    with EmbeddedServer(tmp_path / "nats") as server:
        asyncio.run(_publish(server.url, [*other_day[:1], *day, republished, *other_day[1:]]))
        assert len(read_predictions(server.url, DAY)) == 3  # the broker dropped the repeated publish

        result, evaluation = _run(lake, server.url)
        stored = Warehouse(lake).frame("streamed_predictions", DAY)
        assert list(stored.columns) == list(PREDICTION_COLUMNS)
        assert sorted(zip(stored["carrier"], stored["flight"], stored["origin"])) == [
            ("AA", 1141, "JFK"), ("B6", 725, "JFK"), ("UA", 1545, "EWR")]
        assert set(stored["date"]) == {DAY}
        ua = stored[stored["carrier"] == "UA"].iloc[0]
        assert ua["delay_probability"] == 0.25
        metadata = result.asset_materializations_for_node("streamed_predictions")[0].metadata
        assert metadata["dagster/row_count"].value == 3
        assert metadata["model_versions"].value == ["7"]
        assert metadata["mean_delay_probability"].value == pytest.approx(0.5)

        assert not evaluation.passed
        assert "no processor has consumed the stream" in evaluation.description
        assert evaluation.metadata["pending"] == dg.MetadataValue.null()

        asyncio.run(_add_processor_consumer(server.url))
        _, evaluation = _run(lake, server.url)
        assert evaluation.passed, evaluation.description
        assert evaluation.metadata["pending"].value == 0 and evaluation.metadata["ack_pending"].value == 0
        newest = evaluation.metadata["newest_published_at"].value
        assert newest == pytest.approx(other_day[1].published_at.timestamp())  # the newest on the stream, any day

        _, evaluation = _run(lake, server.url, freshness_minutes=1.0)
        assert not evaluation.passed and "newest prediction is" in evaluation.description
