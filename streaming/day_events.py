"""A day of landing files as the events that happened, in event-time order: what the replay producer publishes.

Times come from the typed rows (``ml/parsing.py`` with the landing contracts) and ``ml/`` clock arithmetic,
the same the features use: a departure at scheduled + ``dep_delay``, an arrival at
``ml.flight_times.arrival_minutes``, a weather report at its hour + ``REPORT_DELAY_MINUTES``. The
schedule of day D is published at 18:00 (New York) on D−1.
"""

from __future__ import annotations

import datetime as dt
import io

import numpy as np
import pandas as pd

from ml.contracts import FLIGHTS, WEATHER
from ml.day_so_far import REPORT_DELAY_MINUTES, scheduled_minutes
from ml.flight_times import NEW_YORK, arrival_minutes
from ml.parsing import parse_landing_strings
from streaming.events import (ARRIVAL_COLUMNS, SCHEDULE_COLUMNS, TYPE_ORDER, FlightArrived, FlightCancelled,
                              FlightDeparted, FlightKey, FlightScheduled, WeatherObserved, at_minute)

SCHEDULE_PUBLISHED_AT = dt.time(18, 0)


def read_csv_strings(data: bytes) -> pd.DataFrame:
    """A landing CSV exactly as written (strings, ``NA`` kept), as ingestion reads it."""
    return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)


def schedule_minute(day: str) -> int:
    evening = pd.Timestamp(dt.datetime.combine(dt.date.fromisoformat(day) - dt.timedelta(days=1), SCHEDULE_PUBLISHED_AT))
    return int(evening.tz_localize(NEW_YORK).tz_convert("UTC").value // 60_000_000_000)


def day_events(day: str, flights: pd.DataFrame | None, weather: pd.DataFrame | None,
               airports: pd.DataFrame) -> list[tuple[int, int, object]]:
    """``(minute, order, event)`` for a day's landing rows (string frames), unsorted."""
    out: list[tuple[int, int, object]] = []
    if flights is not None and len(flights):
        typed = parse_landing_strings(flights, FLIGHTS, f"flights {day}").frame
        scheduled = scheduled_minutes(typed)
        delay = typed["dep_delay"].astype("float64").to_numpy()
        arrived = typed["arr_delay"].notna().to_numpy()
        landed = np.zeros(len(typed), dtype="int64")
        landed[arrived] = arrival_minutes(typed[arrived], airports)
        published = at_minute(schedule_minute(day))
        records = flights.to_dict("records")
        for i, row in enumerate(records):
            key = FlightKey(date=dt.date.fromisoformat(day), carrier=row["carrier"], flight=int(row["flight"]),
                            origin=row["origin"])
            out.append((schedule_minute(day), TYPE_ORDER["flight.scheduled"], FlightScheduled(
                event_time=published, flight=key, schedule={c: row[c] for c in SCHEDULE_COLUMNS})))
            if np.isnan(delay[i]):
                out.append((int(scheduled[i]), TYPE_ORDER["flight.cancelled"], FlightCancelled(event_time=at_minute(int(scheduled[i])), flight=key)))
            else:
                left = int(scheduled[i] + delay[i])
                out.append((left, TYPE_ORDER["flight.departed"], FlightDeparted(event_time=at_minute(left), flight=key, dep_time=row["dep_time"],
                                                    dep_delay=row["dep_delay"])))
            if arrived[i]:
                out.append((int(landed[i]), TYPE_ORDER["flight.arrived"], FlightArrived(event_time=at_minute(int(landed[i])), flight=key,
                                                             **{c: row[c] for c in ARRIVAL_COLUMNS})))
    if weather is not None and len(weather):
        typed = parse_landing_strings(weather, WEATHER, f"weather {day}").frame
        issued = (typed["time_hour"].astype("datetime64[ns, UTC]").astype("int64") // 60_000_000_000
                  + REPORT_DELAY_MINUTES).to_numpy()
        for i, row in enumerate(weather.to_dict("records")):
            out.append((int(issued[i]), TYPE_ORDER["weather.observed"], WeatherObserved(event_time=at_minute(int(issued[i])), origin=row["origin"],
                                                           report=dict(row))))
    return out


def ordered(events: list[tuple[int, int, object]]) -> list[tuple[int, object]]:
    """Event-time order; within a minute, schedules, weather, cancellations, departures, arrivals."""
    events.sort(key=lambda item: (item[0], item[1]))
    return [(minute, event) for minute, _, event in events]
