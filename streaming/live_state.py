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

from ml.contracts import FLIGHTS, WEATHER, Contract
from ml.day_so_far import CUTOFF_MARGIN_MINUTES
from ml.features import KEY_COLUMNS, build_features
from ml.history import HISTORY_DAYS, day_counts
from ml.parsing import NA_VALUES, parse_frames, parse_landing_strings
from streaming.events import (ARRIVAL_COLUMNS, DEPARTURE_COLUMNS, SCHEDULE_COLUMNS, ClockTick, FlightArrived, FlightCancelled,
                              FlightDeparted, FlightScheduled, Rejected, WeatherObserved, at_minute)

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
    scheduled_at: dict[str, int] = field(default_factory=dict)
    """Scheduled departure of each flight, minutes since 1970 UTC."""
    schedule_version: int = 0
    version: int = 0
    """Bumped by every change: a schedule, a departure or an arrival."""
    arrivals_version: int = 0
    _schedule_typed: tuple[int, pd.DataFrame] | None = None
    _typed: tuple[int, pd.DataFrame] | None = None
    _counts: tuple[int, pd.DataFrame] | None = None

    def raw_schedule(self) -> pd.DataFrame:
        return pd.DataFrame(list(self.schedule.values()), columns=list(SCHEDULE_COLUMNS))

    def raw_progress(self) -> pd.DataFrame:
        """Departure and arrival columns in schedule order, as landing strings (``NA``: not seen yet)."""
        missing_departure, missing_arrival = dict.fromkeys(DEPARTURE_COLUMNS, "NA"), dict.fromkeys(ARRIVAL_COLUMNS, "NA")
        rows = [{**self.departed.get(fid, missing_departure), **self.arrived.get(fid, missing_arrival)}
                for fid in self.schedule]
        return pd.DataFrame(rows, columns=[*DEPARTURE_COLUMNS, *ARRIVAL_COLUMNS])

    @property
    def typed_current(self) -> bool:
        return self._typed is not None and self._typed[0] == self.version

    def typed(self) -> pd.DataFrame:
        """The day's raw flights as ingestion types them; departures and arrivals not yet seen are missing."""
        if not self.typed_current:
            retype([self])
        return self._typed[1]

    def counts(self, airports: pd.DataFrame) -> pd.DataFrame:
        """``ml.history.day_counts`` of the arrivals seen so far."""
        if self._counts is None or self._counts[0] != self.arrivals_version:
            self._counts = (self.arrivals_version, day_counts(self.typed(), self.day, airports))
        return self._counts[1]


def _part(columns) -> Contract:
    return Contract(dataset="flights", columns=tuple(c for c in FLIGHTS.columns if c.name in columns), key=(),
                    date_columns=None)


SCHEDULE_PART, PROGRESS_PART = _part(SCHEDULE_COLUMNS), _part((*DEPARTURE_COLUMNS, *ARRIVAL_COLUMNS))
"""The flights contract split in the columns the schedule brings and those departures and arrivals fill in:
each column is typed by the same code as ingestion's (``ml.parsing``), the schedule's once a day, the rest as
they change."""


def _typed_parts(raws: dict[str, pd.DataFrame], contract: Contract) -> dict[str, pd.DataFrame]:
    parsed = parse_frames({day: raw.where(~raw.isin(NA_VALUES)) for day, raw in raws.items()}, contract,
                          {day: f"live flights {day}" for day in raws})
    for day, result in parsed.items():
        if not result.ok:
            raise ValueError(f"live flights {day}: {result.type_problems[0]}")
    return {day: result.frame for day, result in parsed.items()}


def retype(days: list[FlightDay]) -> None:
    """Type the days whose events changed, one vectorised pass for all of them (``ml.parsing``)."""
    stale = [d for d in days if not d.typed_current]
    if not stale:
        return
    new_schedules = [d for d in stale if d._schedule_typed is None or d._schedule_typed[0] != d.schedule_version]
    for day, frame in _typed_parts({d.day: d.raw_schedule() for d in new_schedules}, SCHEDULE_PART).items():
        flights = next(d for d in new_schedules if d.day == day)
        flights._schedule_typed = (flights.schedule_version, frame)
    progress = _typed_parts({d.day: d.raw_progress() for d in stale}, PROGRESS_PART)
    for flights in stale:
        frame = pd.concat([flights._schedule_typed[1], progress[flights.day]], axis=1)[list(FLIGHT_COLUMNS)]
        flights._typed = (flights.version, frame)


def _day_before(day: str) -> str:
    return (dt.date.fromisoformat(day) - dt.timedelta(days=1)).isoformat()


def _window(day: str) -> list[str]:
    """The ``HISTORY_DAYS`` days before ``day``."""
    first = dt.date.fromisoformat(day) - dt.timedelta(days=HISTORY_DAYS)
    return [(first + dt.timedelta(days=i)).isoformat() for i in range(HISTORY_DAYS)]


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
        self.complete_through: int | None = None
        self._pending: list[tuple[int, str, str]] = []
        self._history: dict[str, tuple[tuple, pd.DataFrame | None]] = {}
        self._weather_typed: dict[str, tuple[int, pd.DataFrame]] = {}

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
            self._advance(event.minute, complete=True)
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
                try:
                    scheduled = _minute_of(event.schedule["time_hour"], event.schedule["minute"])
                except ValueError:
                    raise Rejected(f"flight.scheduled {fid}: time_hour/minute do not parse") from None
                flights.schedule[fid] = event.schedule
                flights.scheduled_at[fid] = scheduled
                flights.version += 1
                flights.schedule_version += 1
                cutoff = scheduled - CUTOFF_MARGIN_MINUTES
                if self.origins is None or event.flight.origin in self.origins:
                    heapq.heappush(self._pending, (cutoff, day, fid))
            self._advance(event.minute)
            return day
        if fid not in flights.schedule:
            raise Rejected(f"{event.type} {fid}: no flight.scheduled seen for this flight")
        scheduled = flights.scheduled_at[fid]
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

    def _advance(self, minute: int, complete: bool = False) -> None:
        """The newest event time seen, and the newest minute known complete: an event of a later minute (the
        producer publishes in event-time order), or a clock tick of that minute (published after its events).

        A flight is due once its cutoff minute is complete, not merely reached: three origins' weather reports
        share a minute, and one at the cutoff counts for the flight (it was issued by then)."""
        if self.watermark is None or minute > self.watermark:
            self.watermark = minute
        done = minute if complete else minute - 1
        if self.complete_through is None or done > self.complete_through:
            self.complete_through = done

    def event_count(self) -> int:
        """Flight and weather events held (what the store holds too)."""
        return sum(len(d.schedule) + len(d.departed) + len(d.arrived) + len(d.cancelled) for d in self.days.values()) \
            + sum(len(w) for w in self.weather.values())

    def mark_published(self, day: str, flight_id: str) -> None:
        self.day(day).published.add(flight_id)

    def due(self) -> list[DueFlight]:
        """Flights whose cutoff minute is complete (less the allowed lateness), not yet predicted; oldest first."""
        if self.complete_through is None:
            return []
        horizon = self.complete_through - self.allowed_lateness
        out = []
        while self._pending and self._pending[0][0] <= horizon:
            cutoff, day, fid = heapq.heappop(self._pending)
            if day in self.days and fid not in self.days[day].published:
                out.append(DueFlight(day, fid, cutoff))
        return out

    def features(self, due: list[DueFlight]) -> pd.DataFrame:
        """``ml.features.build_features`` rows of the due flights (one per flight, in ``due`` order), with ``flight_id``.

        The due flights' days go through one call (as the batch path builds a range), so a batch of
        events spanning days costs one pass, not one per day.
        """
        if not due:
            return pd.DataFrame()
        days = sorted({d.day for d in due})
        window = {h for day in days for h in _window(day)}
        retype([self.days[d] for d in sorted(window | set(days)) if d in self.days])
        flights = pd.concat([self.days[d].typed() for d in days], ignore_index=True)
        built = build_features(flights, self._weather_for(days), self.planes, self.airports,
                               {day: self.history_state(day) for day in days})
        ids = (built["date"] + "/" + built["carrier"].astype(str) + "/" + built["flight"].astype(str) + "/"
               + built["origin"].astype(str))
        built.index = pd.Index(ids.to_numpy(), name="flight_id")
        out = built.loc[[d.flight_id for d in due]]
        return out.assign(flight_id=out.index.to_numpy()).reset_index(drop=True)

    def _weather_for(self, days: list[str]) -> pd.DataFrame | None:
        """The days' reports and those of the day before each (a flight after midnight reads the previous evening's trend)."""
        wanted = sorted({d for day in days for d in (_day_before(day), day)})
        frames = [frame for d in wanted if (frame := self._typed_weather(d)) is not None]
        return pd.concat(frames, ignore_index=True) if frames else None

    def _typed_weather(self, day: str) -> pd.DataFrame | None:
        reports = self.weather.get(day)
        if not reports:
            return None
        cached = self._weather_typed.get(day)
        if cached is None or cached[0] != len(reports):
            raw = pd.DataFrame([{c: r.get(c, "NA") for c in WEATHER_COLUMNS} for r in reports.values()],
                               columns=list(WEATHER_COLUMNS))
            self._weather_typed[day] = (len(reports), parse_landing_strings(raw, WEATHER, f"live weather {day}").frame)
        return self._weather_typed[day][1]

    def history_state(self, day: str) -> pd.DataFrame | None:
        """``late_history`` of ``day`` from the arrivals seen: the 28 days before it (None: none of them seen)."""
        present = [self.days[d] for d in _window(day) if d in self.days and self.days[d].schedule]
        key = tuple((d.day, d.arrivals_version) for d in present)
        cached = self._history.get(day)
        if cached is None or cached[0] != key:
            parts = [d.counts(self.airports) for d in present]
            self._history[day] = (key, pd.concat(parts, ignore_index=True) if parts else None)
        return self._history[day][1]

    def expired_days(self) -> list[str]:
        """Days older than the late-rate window needs, forgotten from memory (the caller forgets them in the store)."""
        if self.watermark is None:
            return []
        today = at_minute(self.watermark).date()
        oldest = (today - dt.timedelta(days=KEEP_DAYS)).isoformat()
        old = [d for d in self.days if d < oldest] + [d for d in self.weather if d < oldest and d not in self.days]
        for day in old:
            self.days.pop(day, None)
            self.weather.pop(day, None)
            self._history.pop(day, None)
            self._weather_typed.pop(day, None)
        return sorted(set(old))
