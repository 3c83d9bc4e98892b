"""The airport's state as events arrive, and the features of flights whose cutoff has passed.

The state is the set of events seen (deduplicated by identity), per day: schedules, departures,
arrivals, weather reports. Features are never computed here: a day's events become the typed raw
frame ingestion would have made of them (``ml/parsing.py``) and go through ``ml.features.build_features``,
with the 28-day late rates from ``ml.history``. Every function of ``ml/`` a batch row comes from makes the
streamed row too. That is exact because each of them is point in time: a flight's features read only
events before its cutoff, and when the watermark passes a cutoff every such event has been applied.
"""

from __future__ import annotations

import datetime as dt
import heapq
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ml.contracts import FLIGHTS, WEATHER
from ml.day_so_far import CUTOFF_MARGIN_MINUTES
from ml.features import KEY_COLUMNS, build_features
from ml.history import HISTORY_DAYS, day_counts
from ml.parsing import parse_landing_strings
from streaming.events import (ARRIVAL_COLUMNS, DEPARTURE_COLUMNS, ClockTick, FlightArrived, FlightCancelled,
                              FlightDeparted, FlightScheduled, Rejected, WeatherObserved)

FLIGHT_COLUMNS = tuple(c.name for c in FLIGHTS.columns)
WEATHER_COLUMNS = tuple(c.name for c in WEATHER.columns)
EARLIEST_DEPARTURE_MINUTES = 6 * 60
"""A departure more than this before its schedule is a bad event, not an early flight (2013's earliest: 43 min)."""
KEEP_DAYS = HISTORY_DAYS + 2
MAX_AHEAD_MINUTES = 2 * 1440
"""An event this far past the watermark is a bad clock, not the future: it would expire the whole state."""


def _minute_of(time_hour: str, minute: str) -> int:
    return int(pd.Timestamp(time_hour).value // 60_000_000_000) + int(minute)


@dataclass
class FlightDay:
    """One scheduled day's flights as known so far (raw landing strings), with what is cached from them."""

    day: str
    schedule: dict[str, dict[str, str]] = field(default_factory=dict)
    departed: dict[str, dict[str, str]] = field(default_factory=dict)
    arrived: dict[str, dict[str, str]] = field(default_factory=dict)
    cancelled: set[str] = field(default_factory=set)
    published: set[str] = field(default_factory=set)
    version: int = 0
    arrivals_version: int = 0
    _typed: tuple[int, pd.DataFrame] | None = None
    _counts: tuple[int, pd.DataFrame] | None = None

    def typed(self) -> pd.DataFrame:
        """The day's raw flights as ingestion types them; departures and arrivals not yet seen are missing."""
        if self._typed is None or self._typed[0] != self.version:
            rows = [{**{c: "NA" for c in FLIGHT_COLUMNS}, **row, **self.departed.get(fid, {}), **self.arrived.get(fid, {})}
                    for fid, row in self.schedule.items()]
            raw = pd.DataFrame(rows, columns=list(FLIGHT_COLUMNS)) if rows else pd.DataFrame(columns=list(FLIGHT_COLUMNS))
            parsed = parse_landing_strings(raw, FLIGHTS, f"live flights {self.day}")
            if not parsed.ok:
                raise ValueError(f"live flights {self.day}: {parsed.type_problems[0]}")
            self._typed = (self.version, parsed.frame)
        return self._typed[1]

    def counts(self, airports: pd.DataFrame) -> pd.DataFrame:
        """``ml.history.day_counts`` of the arrivals seen so far."""
        if self._counts is None or self._counts[0] != self.arrivals_version:
            self._counts = (self.arrivals_version, day_counts(self.typed(), self.day, airports))
        return self._counts[1]


@dataclass(frozen=True)
class DueFlight:
    day: str
    flight_id: str
    cutoff: int


class LiveState:
    """Events in (any order within the allowed lateness, repeats harmless), due flights and their features out."""

    def __init__(self, planes: pd.DataFrame, airports: pd.DataFrame, allowed_lateness_minutes: int = 0,
                 origins: frozenset[str] | None = None):
        self.planes, self.airports = planes, airports
        self.allowed_lateness = allowed_lateness_minutes
        self.origins = origins
        """Origins whose flights this replica predicts (None: all). Every replica keeps every event: a
        carrier's day counts all its origins and a plane's previous leg may leave from another airport."""
        self.days: dict[str, FlightDay] = {}
        self.weather: dict[str, dict[str, dict[str, str]]] = {}
        self.watermark: int | None = None
        self._pending: list[tuple[int, str, str]] = []

    def day(self, day: str) -> FlightDay:
        if day not in self.days:
            self.days[day] = FlightDay(day)
        return self.days[day]

    def apply(self, event) -> str | None:
        """Apply one event; returns the day it is stored under (None: nothing to store), or raises ``Rejected``."""
        if self.watermark is not None and event.minute > self.watermark + MAX_AHEAD_MINUTES:
            ahead = (event.minute - self.watermark) / 1440
            raise Rejected(f"{event.type}: event_time {event.event_time.isoformat()} is {ahead:,.0f} days ahead of the "
                           "stream's watermark (a bad clock?)")
        if isinstance(event, ClockTick):
            self._advance(event.minute)
            return None
        if isinstance(event, WeatherObserved):
            report = event.report
            day = f"{report.get('year', '')}-{report.get('month', '').zfill(2)}-{report.get('day', '').zfill(2)}"
            try:
                dt.date.fromisoformat(day)
            except ValueError:
                raise Rejected(f"weather.observed {event.origin}: no valid year/month/day in the report") from None
            self.weather.setdefault(day, {})[f"{event.origin}/{report['time_hour']}"] = report
            self._advance(event.minute)
            return day
        day = event.flight.date.isoformat()
        fid = event.flight.id()
        flights = self.day(day)
        if isinstance(event, FlightScheduled):
            if fid not in flights.schedule:
                flights.schedule[fid] = event.schedule
                flights.version += 1
                try:
                    cutoff = _minute_of(event.schedule["time_hour"], event.schedule["minute"]) - CUTOFF_MARGIN_MINUTES
                except ValueError:
                    del flights.schedule[fid]
                    raise Rejected(f"flight.scheduled {fid}: time_hour/minute do not parse") from None
                if self.origins is None or event.flight.origin in self.origins:
                    heapq.heappush(self._pending, (cutoff, day, fid))
            self._advance(event.minute)
            return day
        if fid not in flights.schedule:
            raise Rejected(f"{event.type} {fid}: no flight.scheduled seen for this flight")
        scheduled = _minute_of(flights.schedule[fid]["time_hour"], flights.schedule[fid]["minute"])
        if isinstance(event, FlightDeparted):
            if event.minute < scheduled - EARLIEST_DEPARTURE_MINUTES:
                raise Rejected(f"flight.departed {fid}: {scheduled - event.minute} minutes before its schedule")
            values = {c: getattr(event, c) for c in DEPARTURE_COLUMNS}
            if flights.departed.get(fid) != values:
                flights.departed[fid] = values
                flights.version += 1
        elif isinstance(event, FlightArrived):
            values = {c: getattr(event, c) for c in ARRIVAL_COLUMNS}
            if flights.arrived.get(fid) != values:
                flights.arrived[fid] = values
                flights.version += 1
                flights.arrivals_version += 1
        elif isinstance(event, FlightCancelled):
            flights.cancelled.add(fid)
        self._advance(event.minute)
        return day

    def _advance(self, minute: int) -> None:
        if self.watermark is None or minute > self.watermark:
            self.watermark = minute

    def mark_published(self, day: str, flight_id: str) -> None:
        self.day(day).published.add(flight_id)

    def due(self) -> list[DueFlight]:
        """Flights whose cutoff the watermark (less the allowed lateness) has reached, not yet predicted; oldest first."""
        if self.watermark is None:
            return []
        horizon = self.watermark - self.allowed_lateness
        out = []
        while self._pending and self._pending[0][0] <= horizon:
            cutoff, day, fid = heapq.heappop(self._pending)
            if day in self.days and fid not in self.days[day].published:
                out.append(DueFlight(day, fid, cutoff))
        return out

    def features(self, due: list[DueFlight]) -> pd.DataFrame:
        """``ml.features.build_features`` rows of the due flights (one per flight, in ``due`` order), with ``flight_id``."""
        parts = []
        for day in sorted({d.day for d in due}):
            wanted = [d.flight_id for d in due if d.day == day]
            flights = self.days[day].typed()
            built = build_features(flights, self._weather_for(day), self.planes, self.airports,
                                   {day: self.history_state(day)})
            ids = (built["date"] + "/" + built["carrier"].astype(str) + "/" + built["flight"].astype(str) + "/"
                   + built["origin"].astype(str))
            built = built.assign(flight_id=ids.to_numpy()).set_index("flight_id", drop=False)
            parts.append(built.loc[wanted])
        return pd.concat(parts).reset_index(drop=True) if parts else pd.DataFrame()

    def _weather_for(self, day: str) -> pd.DataFrame | None:
        """The day's reports and the day before's (a flight after midnight reads the previous evening's trend)."""
        previous = (dt.date.fromisoformat(day) - dt.timedelta(days=1)).isoformat()
        rows = [*self.weather.get(previous, {}).values(), *self.weather.get(day, {}).values()]
        if not rows:
            return None
        raw = pd.DataFrame([{c: r.get(c, "NA") for c in WEATHER_COLUMNS} for r in rows], columns=list(WEATHER_COLUMNS))
        return parse_landing_strings(raw, WEATHER, f"live weather {day}").frame

    def history_state(self, day: str) -> pd.DataFrame | None:
        """``late_history`` of ``day`` from the arrivals seen: the 28 days before it (None: none of them seen)."""
        first = dt.date.fromisoformat(day) - dt.timedelta(days=HISTORY_DAYS)
        window = [(first + dt.timedelta(days=i)).isoformat() for i in range(HISTORY_DAYS)]
        parts = [self.days[d].counts(self.airports) for d in window if d in self.days and self.days[d].schedule]
        return pd.concat(parts, ignore_index=True) if parts else None

    def expired_days(self) -> list[str]:
        """Days older than the late-rate window needs, forgotten from memory (the caller forgets them in the store)."""
        if self.watermark is None:
            return []
        today = dt.datetime.fromtimestamp(self.watermark * 60, tz=dt.timezone.utc).date()
        oldest = (today - dt.timedelta(days=KEEP_DAYS)).isoformat()
        old = [d for d in self.days if d < oldest] + [d for d in self.weather if d < oldest and d not in self.days]
        for day in old:
            self.days.pop(day, None)
            self.weather.pop(day, None)
        return sorted(set(old))
