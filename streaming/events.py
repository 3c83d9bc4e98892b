"""The event schema: the one module that knows what an event on the airport stream holds.

Every event carries its ``schema_version``, its ``type`` and its ``event_time`` (when it happened, UTC).
Flight and weather fields travel as the landing CSV spells them (strings, ``NA`` for missing), so the
processor types them with the same contract and parser as ingestion (``ml/contracts.py``,
``ml/parsing.py``): one typing path online and offline. A message id derived from the event's identity
lets JetStream drop a repeated publish (``Nats-Msg-Id``).

Subjects: ``airport.<ORIGIN>.<type>`` (e.g. ``airport.EWR.flight.departed``), ``airport.clock.tick`` for the
producer's clock; predictions on ``prediction.<date>.<ORIGIN>``; rejects on ``deadletter.airport``.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal, Union

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

SCHEMA_VERSION = 1
EVENTS_SUBJECT_PREFIX = "airport"
PREDICTIONS_SUBJECT_PREFIX = "prediction"
DEAD_LETTER_SUBJECT = "deadletter.airport"
MSG_ID_HEADER = "Nats-Msg-Id"
REASON_HEADER = "Dead-Letter-Reason"

SCHEDULE_COLUMNS = ("year", "month", "day", "sched_dep_time", "sched_arr_time", "carrier", "flight", "tailnum",
                    "origin", "dest", "distance", "hour", "minute", "time_hour")
"""The landing columns of a flight known from the published schedule."""
DEPARTURE_COLUMNS = ("dep_time", "dep_delay")
ARRIVAL_COLUMNS = ("arr_time", "arr_delay", "air_time")
LATEST_PLAUSIBLE = dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc)


class FlightKey(BaseModel):
    """What a caller knows of a flight: its scheduled (local) date, carrier, number and origin."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    date: dt.date
    carrier: str = Field(min_length=1, max_length=3)
    flight: int = Field(ge=0)
    origin: str = Field(min_length=3, max_length=4)

    def id(self) -> str:
        return f"{self.date.isoformat()}/{self.carrier}/{self.flight}/{self.origin}"

    @classmethod
    def parse_id(cls, text: str) -> FlightKey:
        date, carrier, flight, origin = text.split("/")
        return cls(date=dt.date.fromisoformat(date), carrier=carrier, flight=int(flight), origin=origin)


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    schema_version: Literal[1] = SCHEMA_VERSION
    event_time: dt.datetime

    @property
    def minute(self) -> int:
        """Event time as whole minutes since 1970 UTC (the unit every cutoff is in)."""
        return int(self.event_time.timestamp() // 60)


class _FlightEvent(_Event):
    flight: FlightKey

    @property
    def origin(self) -> str:
        return self.flight.origin

    def msg_id(self) -> str:
        return f"{self.type}/{self.flight.id()}"


class FlightScheduled(_FlightEvent):
    """Published the evening before the flight's day: its row of the schedule."""

    type: Literal["flight.scheduled"] = "flight.scheduled"
    schedule: dict[str, str]


def scheduled_msg_id(flight_id: str) -> str:
    """The message id of a flight's ``flight.scheduled`` event (the store keys events by it)."""
    return f"flight.scheduled/{flight_id}"


class FlightDeparted(_FlightEvent):
    """At the moment of departure: actual time (local hhmm) and delay in minutes."""

    type: Literal["flight.departed"] = "flight.departed"
    dep_time: str
    dep_delay: str


class FlightCancelled(_FlightEvent):
    """At the scheduled departure of a flight that never left."""

    type: Literal["flight.cancelled"] = "flight.cancelled"


class FlightArrived(_FlightEvent):
    """At the actual arrival: the label."""

    type: Literal["flight.arrived"] = "flight.arrived"
    arr_time: str
    arr_delay: str
    air_time: str


class WeatherObserved(_Event):
    """An hourly report of an origin's weather, at the time it is issued (the hour + ``REPORT_DELAY_MINUTES``)."""

    type: Literal["weather.observed"] = "weather.observed"
    origin: str = Field(min_length=3, max_length=4)
    report: dict[str, str]

    def msg_id(self) -> str:
        return f"{self.type}/{self.origin}/{self.report.get('time_hour', '')}"


class ClockTick(_Event):
    """The producer's clock: nothing happened before ``event_time`` that was not already published."""

    type: Literal["clock.tick"] = "clock.tick"

    @property
    def origin(self) -> str:
        return "clock"

    def msg_id(self) -> str:
        return f"{self.type}/{self.minute}"


AirportEvent = Annotated[
    Union[FlightScheduled, FlightDeparted, FlightCancelled, FlightArrived, WeatherObserved, ClockTick],
    Field(discriminator="type"),
]
EVENT_TYPES = ("flight.scheduled", "flight.departed", "flight.cancelled", "flight.arrived", "weather.observed",
               "clock.tick")
_ADAPTER = TypeAdapter(AirportEvent)


TYPE_ORDER = {"flight.scheduled": 0, "weather.observed": 1, "flight.cancelled": 2, "flight.departed": 3,
              "flight.arrived": 4, "clock.tick": 5}
"""Within one minute, the order events are published and applied in (a clock tick closes its minute)."""


def at_minute(minute: int) -> dt.datetime:
    """The UTC instant of ``minute`` (minutes since 1970), the unit every event time and cutoff is counted in."""
    return dt.datetime.fromtimestamp(minute * 60, tz=dt.timezone.utc)


class Prediction(BaseModel):
    """What the processor publishes at a flight's cutoff."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    schema_version: Literal[1] = SCHEMA_VERSION
    type: Literal["prediction"] = "prediction"
    flight: FlightKey
    cutoff: dt.datetime
    delay_probability: float
    model_version: str
    feature_digest: str
    published_at: dt.datetime

    def msg_id(self) -> str:
        return f"prediction/{self.flight.id()}"


class Rejected(ValueError):
    """An event the processor cannot use; ``reason`` goes with it to the dead-letter subject."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def prediction_message(flight_id: str, cutoff: dt.datetime, probability: float, model_version: str,
                       feature_digest: str, published_at: dt.datetime) -> tuple[str, bytes, str]:
    """``(subject, payload, msg id)`` of a ``Prediction``, serialised without building the model (the processor
    publishes hundreds of thousands; ``Prediction.model_validate_json`` reads it back, as the tests do)."""
    date, carrier, flight, origin = flight_id.split("/")
    payload = orjson.dumps({
        "schema_version": SCHEMA_VERSION, "type": "prediction",
        "flight": {"date": date, "carrier": carrier, "flight": int(flight), "origin": origin},
        "cutoff": cutoff.isoformat(), "delay_probability": probability, "model_version": model_version,
        "feature_digest": feature_digest, "published_at": published_at.isoformat(),
    })
    return f"{PREDICTIONS_SUBJECT_PREFIX}.{date}.{origin}", payload, f"prediction/{flight_id}"


def subject(event) -> str:
    if isinstance(event, ClockTick):
        return f"{EVENTS_SUBJECT_PREFIX}.clock.tick"
    return f"{EVENTS_SUBJECT_PREFIX}.{event.origin}.{event.type}"


def prediction_subject(prediction: Prediction) -> str:
    return f"{PREDICTIONS_SUBJECT_PREFIX}.{prediction.flight.date.isoformat()}.{prediction.flight.origin}"


def encode(event) -> bytes:
    return orjson.dumps(event.model_dump(mode="json"))


def decode(data: bytes):
    """The event in ``data``, or ``Rejected`` with a reason a person can act on."""
    try:
        event = _ADAPTER.validate_json(data)
    except ValidationError:
        event = None
    if event is not None and event.event_time < LATEST_PLAUSIBLE and _complete(event):
        return event
    return _diagnose(data)


def _complete(event) -> bool:
    if isinstance(event, FlightScheduled):
        return all(c in event.schedule for c in SCHEDULE_COLUMNS)
    if isinstance(event, WeatherObserved):
        return "time_hour" in event.report
    return True


def _diagnose(data: bytes):
    """The slow path: why ``data`` is not a usable event (raises ``Rejected``)."""
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise Rejected(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise Rejected(f"not a JSON object: {type(raw).__name__}")
    if raw.get("type") not in EVENT_TYPES:
        raise Rejected(f"unknown event type {raw.get('type')!r}; known: {', '.join(EVENT_TYPES)}")
    if raw.get("schema_version") != SCHEMA_VERSION:
        raise Rejected(f"schema_version {raw.get('schema_version')!r} is not {SCHEMA_VERSION}")
    try:
        event = _ADAPTER.validate_python(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in exc.errors()[:3])
        raise Rejected(f"invalid {raw['type']}: {problems}") from None
    if event.event_time >= LATEST_PLAUSIBLE:
        raise Rejected(f"event_time {event.event_time.isoformat()} is implausibly far in the future")
    if isinstance(event, FlightScheduled):
        missing = [c for c in SCHEDULE_COLUMNS if c not in event.schedule]
        if missing:
            raise Rejected(f"flight.scheduled {event.flight.id()}: schedule lacks {', '.join(missing)}")
    if isinstance(event, WeatherObserved) and "time_hour" not in event.report:
        raise Rejected(f"weather.observed {event.origin}: report lacks time_hour")
    return event
