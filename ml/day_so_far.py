"""What the airport knows about the day so far at a flight's prediction time, its cutoff.

The cutoff is the scheduled departure minus ``CUTOFF_MARGIN`` (docs/model-quality.md argues the 15
minutes). By then the schedule of the whole day is known, and of other flights' departures exactly
those that left before the cutoff: their actual departure time (scheduled + ``dep_delay``, which is
right across midnight where the hhmm ``dep_time`` wraps) and their delay. Nothing else of any
departure and nothing of any arrival enters these features.

"Today" is the flight's scheduled (local) date, the partition it belongs to: a day's features need no
other day's raw flights. Every feature is computed two ways that tests hold equal: vectorised over a
frame of flights (``day_so_far_features``, for batches and training) and from a live feed of departure
events (``DaySoFar``, for a caller that serves requests).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pandas as pd

VERSION = "2"
"""Bump when what this module computes changes: the assets built on it become stale (assets/versions.py)."""

CUTOFF_MARGIN_MINUTES = 15
RECENT_MINUTES = 120
"""The window for "recent" departures: long enough to hold a bank of departures, short enough to follow a storm."""
HIGH_QUANTILE = 0.9
REPORT_DELAY_MINUTES = 51
"""The hourly report for hour H is taken at about H:51 (and holds that hour's precipitation)."""
TREND_HOURS = 3

_GROUP_SPAN = 100_000_000
"""Keys are ``group * _GROUP_SPAN + minutes since 1970``: one sorted array searches every group at once."""
_NEVER = _GROUP_SPAN - 1
"""Minutes of a departure that has not happened (cancelled): after every cutoff of its group."""

ORIGIN_FEATURES = (
    "origin_recent_departures", "origin_recent_mean_delay", "origin_recent_p90_delay",
    "origin_today_departures", "origin_today_mean_delay",
    "origin_overdue", "origin_overdue_mean_minutes",
    "carrier_origin_recent_departures", "carrier_origin_recent_mean_delay", "carrier_origin_recent_p90_delay",
    "carrier_origin_overdue", "carrier_origin_overdue_mean_minutes",
)
AIRCRAFT_FEATURES = (
    "plane_legs_before", "plane_prev_dep_delay", "plane_prev_overdue_minutes",
    "plane_sched_gap_minutes", "plane_propagated_delay",
)
TREND_WEATHER = ("pressure", "temp", "visib", "wind_speed")
WEATHER_TREND_FEATURES = (*(f"{c}_change_3h" for c in TREND_WEATHER), "precip_3h")
DAY_SO_FAR_FEATURES = (*ORIGIN_FEATURES, *AIRCRAFT_FEATURES)


def _minutes(stamps: pd.Series) -> np.ndarray:
    return (stamps.astype("datetime64[ns, UTC]").astype("int64") // 60_000_000_000).to_numpy()


def scheduled_minutes(flights: pd.DataFrame) -> np.ndarray:
    """Scheduled departure as minutes since 1970 UTC (``time_hour`` is the scheduled hour in UTC)."""
    return _minutes(flights["time_hour"]) + flights["minute"].astype("int64").to_numpy()


def actual_minutes(flights: pd.DataFrame) -> np.ndarray:
    """Actual departure, minutes since 1970 UTC; ``_NEVER`` offset marks a flight that never left (NaN)."""
    delay = flights["dep_delay"].astype("float64").to_numpy()
    out = scheduled_minutes(flights).astype("float64") + delay
    return out


def _groups(*columns: pd.Series | np.ndarray) -> np.ndarray:
    """A group number per row of the combined keys; -1 where any key is missing."""
    group = np.zeros(len(columns[0]), dtype="int64")
    missing = np.zeros(len(group), dtype=bool)
    for column in columns:
        codes, uniques = pd.factorize(column)
        missing |= codes < 0
        group = group * (len(uniques) + 1) + codes
    return np.where(missing, -1, pd.factorize(group)[0])


def quantile_sorted(values: np.ndarray, q: float) -> float:
    """The linear-interpolation quantile of an ascending array (numpy's default method), written out
    so the batch and the live computations give bit-identical results."""
    position = (len(values) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(values) - 1)
    return float(values[low] + (position - low) * (values[high] - values[low]))


def _window_stats(groups, times, values, q_groups, q_times, span, quantile=True, queries_are_events=False):
    """Count, mean and high quantile of ``values`` with time in ``[q_time - span, q_time)``, per query.

    ``times`` and ``q_times`` are int64 minutes; events of group -1 are ignored, queries of group -1 get NaN.
    ``queries_are_events``: query ``i`` is event ``i``'s own flight, whose event never counts for it (a flight
    that leaves more than the cutoff margin early is already gone at its cutoff, but is not its own history).
    """
    keep = groups >= 0
    order = np.lexsort((values[keep], times[keep], groups[keep]))
    keys = (groups[keep] * _GROUP_SPAN + times[keep])[order]
    sorted_values = values[keep][order]
    q_keys = q_groups * _GROUP_SPAN + q_times
    high = np.searchsorted(keys, q_keys, side="left")
    low = np.searchsorted(keys, np.maximum(q_keys - span, q_groups * _GROUP_SPAN), side="left")
    own = np.full(len(q_keys), -1)
    if queries_are_events:
        position = np.empty(len(order), dtype="int64")
        position[order] = np.arange(len(order))
        kept = np.flatnonzero(keep)
        inside = (position >= low[kept]) & (position < high[kept])
        own[kept[inside]] = position[inside]
    count = (high - low - (own >= 0)).astype("float64")
    sums = np.concatenate([[0.0], np.cumsum(sorted_values)])
    own_value = np.where(own >= 0, sorted_values[np.maximum(own, 0)] if len(sorted_values) else 0.0, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, (sums[high] - sums[low] - own_value) / count, np.nan)
    p_high = _window_quantiles(sorted_values, low, high, own) if quantile else np.full(len(q_keys), np.nan)
    missing = q_groups < 0
    count[missing], mean[missing], p_high[missing] = np.nan, np.nan, np.nan
    return count, mean, p_high


def _window_quantiles(values: np.ndarray, low: np.ndarray, high: np.ndarray, skip: np.ndarray,
                      chunk: int = 20_000) -> np.ndarray:
    """``quantile_sorted`` of ``values[low:high]`` (less position ``skip``, where ≥ 0) for every row at once:
    windows padded to one width and sorted."""
    out = np.full(len(low), np.nan)
    count = high - low - (skip >= 0)
    rows = np.flatnonzero(count > 0)
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        width = int((high[part] - low[part]).max())
        index = low[part, None] + np.arange(width)
        inside = (index < high[part, None]) & (index != skip[part, None])
        window = np.where(inside, values[np.minimum(index, len(values) - 1)], np.inf)
        window.sort(axis=1)
        position = (count[part] - 1) * HIGH_QUANTILE
        below = np.floor(position).astype("int64")
        above = np.minimum(below + 1, count[part] - 1)
        a = window[np.arange(len(part)), below]
        b = window[np.arange(len(part)), above]
        out[part] = a + (position - below) * (b - a)
    return out


def _overdue(groups, scheduled, actual, q_groups, q_times):
    """Flights of the group scheduled before the query time that have not left by it: count and mean minutes overdue.

    A flight is overdue at ``c`` when ``scheduled < c`` and it has not left (``actual >= c`` or never):
    overdue(c) = #{scheduled < c} − #{max(scheduled, actual) < c}.
    """
    ends = np.where(np.isnan(actual), np.nan, np.maximum(scheduled, np.nan_to_num(actual)))
    end_minutes = np.where(np.isnan(ends), -1, ends).astype("int64")
    keep = groups >= 0
    base = groups[keep] * _GROUP_SPAN
    by_sched = np.argsort(base + scheduled[keep], kind="stable")
    sched_keys = (base + scheduled[keep])[by_sched]
    end_keys = np.where(end_minutes[keep] < 0, base + _NEVER, base + end_minutes[keep])
    by_end = np.argsort(end_keys, kind="stable")
    sched_sum = np.concatenate([[0], np.cumsum(scheduled[keep][by_sched])])
    end_sched_sum = np.concatenate([[0], np.cumsum(scheduled[keep][by_end])])
    end_keys = end_keys[by_end]
    q_keys = q_groups * _GROUP_SPAN + q_times
    start = q_groups * _GROUP_SPAN
    s_hi, s_lo = np.searchsorted(sched_keys, q_keys), np.searchsorted(sched_keys, start)
    e_hi, e_lo = np.searchsorted(end_keys, q_keys), np.searchsorted(end_keys, start)
    count = (s_hi - s_lo) - (e_hi - e_lo)
    overdue_sched = (sched_sum[s_hi] - sched_sum[s_lo]) - (end_sched_sum[e_hi] - end_sched_sum[e_lo])
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_minutes = np.where(count > 0, (q_times * count - overdue_sched) / np.maximum(count, 1), 0.0)
    count = count.astype("float64")
    missing = q_groups < 0
    count[missing], mean_minutes[missing] = np.nan, np.nan
    return count, mean_minutes


def day_so_far_features(flights: pd.DataFrame, block_minutes: pd.Series | np.ndarray) -> pd.DataFrame:
    """The origin's and the aircraft's day so far at each flight's cutoff; one row per flight, same index.

    ``flights`` are typed raw flights (any set of days); ``block_minutes`` their scheduled gate-to-gate
    minutes (``ml.features.scheduled_block_minutes``), used for the aircraft's expected return.
    """
    date = (flights["year"].astype("int64") * 10_000 + flights["month"].astype("int64") * 100
            + flights["day"].astype("int64")).to_numpy()
    scheduled = scheduled_minutes(flights)
    actual = actual_minutes(flights)
    delay = flights["dep_delay"].astype("float64").to_numpy()
    cutoff = scheduled - CUTOFF_MARGIN_MINUTES
    left = ~np.isnan(actual)
    departed_at = np.where(left, actual, 0).astype("int64")
    out = pd.DataFrame(index=flights.index)

    origin = _groups(date, flights["origin"])
    carrier_origin = _groups(date, flights["origin"], flights["carrier"])
    for prefix, groups in (("origin", origin), ("carrier_origin", carrier_origin)):
        ev_groups = np.where(left, groups, -1)
        count, mean, p_high = _window_stats(ev_groups, departed_at, np.nan_to_num(delay), groups, cutoff, RECENT_MINUTES,
                                            queries_are_events=True)
        out[f"{prefix}_recent_departures"], out[f"{prefix}_recent_mean_delay"] = count, mean
        out[f"{prefix}_recent_p90_delay"] = p_high
        overdue, overdue_minutes = _overdue(groups, scheduled, actual, groups, cutoff)
        out[f"{prefix}_overdue"], out[f"{prefix}_overdue_mean_minutes"] = overdue, overdue_minutes
    count, mean, _ = _window_stats(
        np.where(left, origin, -1), departed_at, np.nan_to_num(delay), origin, cutoff, _GROUP_SPAN, quantile=False,
        queries_are_events=True,
    )
    out["origin_today_departures"], out["origin_today_mean_delay"] = count, mean

    aircraft = _aircraft(_groups(date, flights["tailnum"]), scheduled, actual, delay, cutoff,
                         flights["flight"].astype("int64").to_numpy(), np.asarray(block_minutes, dtype="float64"))
    for column, values in aircraft.items():
        out[column] = values
    return out[list(DAY_SO_FAR_FEATURES)]


def _aircraft(groups, scheduled, actual, delay, cutoff, flight, block):
    """The same tail's latest leg scheduled earlier today (ties: the higher flight number), as known at the cutoff."""
    n = len(groups)
    keep = np.flatnonzero(groups >= 0)
    order = keep[np.lexsort((flight[keep], scheduled[keep], groups[keep]))]
    keys = groups[order] * _GROUP_SPAN + scheduled[order]
    q_keys = groups * _GROUP_SPAN + scheduled
    position = np.searchsorted(keys, q_keys, side="left") - 1
    first = np.searchsorted(keys, groups * _GROUP_SPAN, side="left")
    has_prev = (groups >= 0) & (position >= first)
    prev = order[np.clip(position, 0, max(len(order) - 1, 0))] if len(order) else np.zeros(n, dtype="int64")
    nan = np.full(n, np.nan)
    prev_left = has_prev & ~np.isnan(actual[prev]) & (np.nan_to_num(actual[prev], nan=np.inf) < cutoff)
    prev_delay = np.where(prev_left, delay[prev], nan)
    prev_overdue = np.where(has_prev & ~prev_left, np.maximum(cutoff - scheduled[prev], 0), np.where(has_prev, 0.0, nan))
    gap = np.where(has_prev, scheduled - scheduled[prev], nan)
    lateness = np.where(prev_left, prev_delay, prev_overdue)
    propagated = lateness - (gap - 2 * block[prev])
    legs = np.where(groups >= 0, np.maximum(position - first + 1, 0), nan)
    return {
        "plane_legs_before": legs.astype("float64"),
        "plane_prev_dep_delay": prev_delay,
        "plane_prev_overdue_minutes": prev_overdue.astype("float64"),
        "plane_sched_gap_minutes": gap,
        "plane_propagated_delay": np.where(has_prev, propagated, nan),
    }


def weather_trend_features(flights: pd.DataFrame, weather: pd.DataFrame | None) -> pd.DataFrame:
    """Change over ``TREND_HOURS`` hours of the origin's reports known at the cutoff, and the precipitation summed over them.

    The last known report is that of the hour ending ``REPORT_DELAY_MINUTES`` before the cutoff; the change
    is that report minus the one ``TREND_HOURS`` hours earlier; NaN where either is missing.
    """
    out = pd.DataFrame(index=flights.index)
    if weather is None or not len(weather):
        for column in WEATHER_TREND_FEATURES:
            out[column] = np.nan
        return out
    last = last_known_report_hour(flights)
    observed = weather[["origin", "time_hour", *TREND_WEATHER, "precip"]].drop_duplicates(["origin", "time_hour"])
    observed = observed.assign(time_hour=observed["time_hour"].astype("datetime64[ns, UTC]"))
    asked = pd.DataFrame({"origin": flights["origin"].to_numpy(), "time_hour": last})
    keys = asked.drop_duplicates(ignore_index=True)

    def report(hours_back: int) -> pd.DataFrame:
        wanted = keys.assign(time_hour=keys["time_hour"] - pd.Timedelta(hours=hours_back))
        return wanted.merge(observed, on=["origin", "time_hour"], how="left", validate="many_to_one")

    reports = {h: report(h) for h in range(TREND_HOURS + 1)}
    trend = keys.copy()
    for column in TREND_WEATHER:
        trend[f"{column}_change_3h"] = (reports[0][column] - reports[TREND_HOURS][column]).astype("float64")
    trend["precip_3h"] = sum(reports[h]["precip"].astype("float64") for h in range(TREND_HOURS))
    joined = asked.merge(trend, on=["origin", "time_hour"], how="left", validate="many_to_one")
    for column in WEATHER_TREND_FEATURES:
        out[column] = joined[column].to_numpy()
    return out


def last_known_report_hour(flights: pd.DataFrame) -> pd.Series:
    """The ``time_hour`` (UTC) of the origin's newest hourly report taken before each flight's cutoff."""
    cutoff = flights["time_hour"].astype("datetime64[ns, UTC]") + pd.to_timedelta(
        flights["minute"].astype("int64") - CUTOFF_MARGIN_MINUTES - REPORT_DELAY_MINUTES, unit="min"
    )
    return cutoff.dt.floor("h").reset_index(drop=True)


@dataclass(frozen=True)
class ScheduledFlight:
    """A flight of today's published schedule: known before the day starts."""

    key: object
    origin: str
    carrier: str
    tailnum: str | None
    scheduled: int
    """Minutes since 1970 UTC."""
    flight: int = 0
    block_minutes: float = math.nan


class DaySoFar:
    """The day-so-far features from a live feed: one day's schedule, then departure events as they happen.

    ``schedule`` each flight of the day (known in advance), ``departed`` as each one leaves, and
    ``features(key)`` at a flight's cutoff gives what ``day_so_far_features`` computes for it from the
    whole day afterwards. Only departures before the cutoff count, so a feed that runs ahead changes nothing.
    """

    def __init__(self) -> None:
        self._flights: dict[object, ScheduledFlight] = {}
        self._departed: dict[object, int] = {}
        self._by_origin: dict[tuple, list[object]] = defaultdict(list)
        self._by_tail: dict[str, list[object]] = defaultdict(list)

    def schedule(self, flight: ScheduledFlight) -> None:
        self._flights[flight.key] = flight
        self._by_origin[(flight.origin,)].append(flight.key)
        self._by_origin[(flight.origin, flight.carrier)].append(flight.key)
        if flight.tailnum:
            self._by_tail[flight.tailnum].append(flight.key)

    def departed(self, key: object, delay_minutes: int) -> None:
        """Flight ``key`` left ``delay_minutes`` after its scheduled time (negative: early)."""
        self._departed[key] = self._flights[key].scheduled + int(delay_minutes)

    def _left_before(self, key: object, cutoff: int) -> bool:
        return key in self._departed and self._departed[key] < cutoff

    def features(self, key: object) -> dict[str, float]:
        """The ``DAY_SO_FAR_FEATURES`` of flight ``key`` at its cutoff."""
        flight = self._flights[key]
        cutoff = flight.scheduled - CUTOFF_MARGIN_MINUTES
        out: dict[str, float] = {}
        for prefix, group in (("origin", (flight.origin,)), ("carrier_origin", (flight.origin, flight.carrier))):
            members = [self._flights[k] for k in self._by_origin[group]]
            recent = sorted(
                self._departed[m.key] - m.scheduled for m in members
                if m.key != key and self._left_before(m.key, cutoff) and self._departed[m.key] >= cutoff - RECENT_MINUTES
            )
            out[f"{prefix}_recent_departures"] = float(len(recent))
            out[f"{prefix}_recent_mean_delay"] = float(sum(recent)) / len(recent) if recent else math.nan
            out[f"{prefix}_recent_p90_delay"] = quantile_sorted(np.array(recent, dtype="float64"), HIGH_QUANTILE) if recent else math.nan
            overdue = [m for m in members if m.scheduled < cutoff and not self._left_before(m.key, cutoff)]
            out[f"{prefix}_overdue"] = float(len(overdue))
            out[f"{prefix}_overdue_mean_minutes"] = (
                (cutoff * len(overdue) - sum(m.scheduled for m in overdue)) / len(overdue) if overdue else 0.0
            )
            if prefix == "origin":
                today = [self._departed[m.key] - m.scheduled for m in members
                         if m.key != key and self._left_before(m.key, cutoff)]
                out["origin_today_departures"] = float(len(today))
                out["origin_today_mean_delay"] = float(sum(today)) / len(today) if today else math.nan
        out.update(self._aircraft(flight, cutoff))
        return {name: out[name] for name in DAY_SO_FAR_FEATURES}

    def _aircraft(self, flight: ScheduledFlight, cutoff: int) -> dict[str, float]:
        if not flight.tailnum:
            return dict.fromkeys(AIRCRAFT_FEATURES, math.nan)
        earlier = sorted(
            (self._flights[k] for k in self._by_tail[flight.tailnum] if self._flights[k].scheduled < flight.scheduled),
            key=lambda f: (f.scheduled, f.flight),
        )
        out = dict.fromkeys(AIRCRAFT_FEATURES, math.nan)
        out["plane_legs_before"] = float(len(earlier))
        if not earlier:
            return out
        prev = earlier[-1]
        gap = float(flight.scheduled - prev.scheduled)
        if self._left_before(prev.key, cutoff):
            lateness = float(self._departed[prev.key] - prev.scheduled)
            out["plane_prev_dep_delay"], out["plane_prev_overdue_minutes"] = lateness, 0.0
        else:
            lateness = float(max(cutoff - prev.scheduled, 0))
            out["plane_prev_overdue_minutes"] = lateness
        out["plane_sched_gap_minutes"] = gap
        out["plane_propagated_delay"] = lateness - (gap - 2 * prev.block_minutes)
        return out

