"""The live state without servers: when a flight is due, and what an event may change."""

import datetime as dt

import pytest

from streaming.events import ClockTick, Rejected
from streaming.live_state import LiveState
from streaming.processor import reference_tables
from streaming.replay import events_between

FLIGHT = "2013-02-07/EV/5711/JFK"
"""Cutoff 09:51 EST: the minute the three origins' 09:00 reports are issued, one of which is its weather."""


@pytest.fixture(scope="module")
def day():
    planes, airports = reference_tables()
    return planes, airports, events_between(dt.date(2013, 2, 7), dt.date(2013, 2, 7), airports, ticks=False)


def test_a_flight_is_due_only_once_its_cutoff_minute_is_complete(day):
    """A batch boundary between two reports of the cutoff minute must not make the flight due without the second."""
    planes, airports, events = day
    state = LiveState(planes, airports)
    cutoff = 22_670_811  # 2013-02-07 14:51 UTC
    for minute, event in events:
        if minute < cutoff:
            state.apply(event)
    due_before = {d.flight_id for d in state.due()}
    assert FLIGHT not in due_before
    at_cutoff = [e for m, e in events if m == cutoff]
    assert [e.origin for e in at_cutoff if e.type == "weather.observed"] == ["EWR", "JFK", "LGA"]
    for event in at_cutoff:
        state.apply(event)
        assert FLIGHT not in {d.flight_id for d in state.due()}  # the minute may still have events to come
    state.apply(ClockTick(event_time=dt.datetime.fromtimestamp(cutoff * 60, tz=dt.timezone.utc)))
    due = [d for d in state.due() if d.flight_id == FLIGHT]
    assert len(due) == 1
    row = state.features(due).iloc[0]
    assert row["temp"] == pytest.approx(28.04) and row["wind_dir"] == 30.0  # JFK's 09:00 report, issued at the cutoff


def test_repeated_and_unusable_events(day):
    planes, airports, events = day
    state = LiveState(planes, airports)
    for _, event in events[:3000]:
        state.apply(event)
    flights = state.days["2013-02-07"]
    version = flights.version
    for _, event in events[:3000]:
        state.apply(event)  # the same events again: nothing changes
    assert flights.version == version
    departed = next(e for _, e in events if e.type == "flight.departed")
    with pytest.raises(Rejected, match="before its schedule"):
        state.apply(departed.model_copy(update={"event_time": departed.event_time - dt.timedelta(days=1)}))
    unknown = departed.model_copy(update={"flight": departed.flight.model_copy(update={"flight": 99999})})
    with pytest.raises(Rejected, match="no flight.scheduled"):
        state.apply(unknown)
    with pytest.raises(Rejected, match="ahead of the stream"):
        state.apply(departed.model_copy(update={"event_time": dt.datetime(2099, 1, 1, tzinfo=dt.timezone.utc)}))
