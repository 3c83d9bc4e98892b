"""Flight features known at the flight's cutoff (scheduled departure − 15 min), and the label: arrives 15+ minutes late.

Pure pandas: one day (or any set of days) of typed raw flights, that day's weather and the plane
registry in; one row per scheduled flight out. Nothing that is only known after the cutoff may enter
a feature: the flight's own departure and arrival never, other flights' departures only once they
have left (``ml/day_so_far.py``), weather reports only once taken.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ml.day_so_far import (
    AIRCRAFT_FEATURES,
    CUTOFF_MARGIN_MINUTES,
    ORIGIN_FEATURES,
    WEATHER_TREND_FEATURES,
    day_so_far_features,
    last_known_report_hour,
    scheduled_minutes,
    weather_trend_features,
)
from ml.history import HISTORY_FEATURES, history_features

VERSION = "5"
"""Bump when what this module computes changes: the assets built on it become stale (assets/versions.py)."""

LATE_MINUTES = 15
LABEL = "arrived_late"

#: Known only after departure: never a feature, nor anything computed from one.
POST_DEPARTURE_COLUMNS = ("dep_time", "dep_delay", "arr_time", "arr_delay", "air_time")

KEY_COLUMNS = ("date", "carrier", "flight", "origin", "sched_dep_time", "time_hour")
CATEGORICAL_FEATURES = ("carrier", "origin", "dest")
WEATHER_FEATURES = (
    "temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip", "pressure", "visib",
)
NUMERIC_FEATURES = (
    "sched_dep_hour",
    "sched_arr_hour",
    "scheduled_block_minutes",
    "distance",
    "day_of_week",
    "origin_hour_departures",
    "origin_day_departures",
    "carrier_day_departures",
    "plane_age",
    "plane_seats",
    "plane_engines",
    *WEATHER_FEATURES,
    *ORIGIN_FEATURES,
    *AIRCRAFT_FEATURES,
    *WEATHER_TREND_FEATURES,
    *HISTORY_FEATURES,
)
FEATURE_GROUPS = {
    "origin so far": ORIGIN_FEATURES,
    "aircraft": AIRCRAFT_FEATURES,
    "weather trend": WEATHER_TREND_FEATURES,
    "history": HISTORY_FEATURES,
}
"""Features added on top of the base set (schedule, plane, last weather report), by what they describe."""
FEATURE_COLUMNS = (*CATEGORICAL_FEATURES, *NUMERIC_FEATURES)
OUTPUT_COLUMNS = (*KEY_COLUMNS, *[c for c in FEATURE_COLUMNS if c not in KEY_COLUMNS], LABEL)


def _hours(hhmm: pd.Series) -> pd.Series:
    values = hhmm.astype("float64")
    return np.floor(values / 100) + (values % 100) / 60


def scheduled_block_minutes(flights: pd.DataFrame, airports: pd.DataFrame) -> pd.Series:
    """Scheduled gate-to-gate minutes: departure in New York time, arrival in the destination's zone.

    NaN where the destination's time zone is unknown (the 2013 airports table lacks Puerto Rico and
    the Virgin Islands): a naive clock difference would be off by the zones crossed.
    """
    departure = flights["time_hour"] + pd.to_timedelta(flights["minute"].astype("float64"), unit="min")
    day = pd.to_datetime({"year": flights["year"], "month": flights["month"], "day": flights["day"]})
    hhmm = flights["sched_arr_time"].astype("float64")
    local_arrival = day + pd.to_timedelta(np.floor(hhmm / 100) * 60 + hhmm % 100, unit="min")
    zones = flights["dest"].map(airports.drop_duplicates("faa").set_index("faa")["tzone"])
    arrival = pd.Series(pd.NaT, index=flights.index, dtype="datetime64[ns, UTC]")
    for zone, rows in local_arrival.groupby(zones, sort=False):
        arrival.loc[rows.index] = rows.dt.tz_localize(
            str(zone), ambiguous="NaT", nonexistent="shift_forward"
        ).dt.tz_convert("UTC")
    return ((arrival - departure).dt.total_seconds() / 60) % 1440


def _add_plane_features(out: pd.DataFrame, flights: pd.DataFrame, planes: pd.DataFrame) -> None:
    plane_info = planes[["tailnum", "year", "seats", "engines"]].drop_duplicates("tailnum")
    joined = flights[["tailnum"]].merge(plane_info, on="tailnum", how="left", validate="many_to_one")
    joined.index = flights.index
    out["plane_age"] = (flights["year"].astype("float64") - joined["year"].astype("float64")).clip(lower=0)
    out["plane_seats"] = joined["seats"].astype("float64")
    out["plane_engines"] = joined["engines"].astype("float64")


def _add_weather_at_departure(out: pd.DataFrame, flights: pd.DataFrame, weather: pd.DataFrame | None) -> None:
    """The origin's last report before the cutoff; NaN for a day whose weather was held back."""
    if weather is None or not len(weather):
        for column in WEATHER_FEATURES:
            out[column] = np.nan
        return
    observed = weather[["origin", "time_hour", *WEATHER_FEATURES]].drop_duplicates(["origin", "time_hour"])
    # The row for hour H is the report taken near H:51, with that hour's precipitation.
    known = pd.DataFrame({"origin": flights["origin"].to_numpy(), "time_hour": last_known_report_hour(flights)})
    at_departure = known.merge(observed, on=["origin", "time_hour"], how="left", validate="many_to_one")
    at_departure.index = flights.index
    for column in WEATHER_FEATURES:
        out[column] = at_departure[column].astype("float64")


def build_features(
    flights: pd.DataFrame,
    weather: pd.DataFrame | None,
    planes: pd.DataFrame,
    airports: pd.DataFrame,
    history: dict[str, pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """One row per scheduled flight: keys, pre-departure features, and the label.

    ``airports`` gives destination time zones (for the scheduled block time).

    Weather is the origin's last hourly report taken before the cutoff (the report for hour H is
    taken at ~H:51: a flight at H:06–H:59 gets H−1's, one at H:00–H:05 H−2's), with its 3-hour trend;
    a day whose weather was held back gives NaN weather, which the model treats as missing. The label is
    ``<NA>`` for cancelled flights (no arrival), so they can be counted and left out of training.
    ``history`` maps each day to its ``late_history`` state (``ml/history.py``: counts of the days
    before it); a day without one gets missing history features.
    """
    out = pd.DataFrame(index=flights.index)
    stamp = pd.to_datetime(
        {"year": flights["year"], "month": flights["month"], "day": flights["day"]}
    )
    out["date"] = stamp.dt.strftime("%Y-%m-%d")
    for column in ("carrier", "flight", "origin", "sched_dep_time", "time_hour", "dest"):
        out[column] = flights[column]
    out["sched_dep_hour"] = _hours(flights["sched_dep_time"])
    out["sched_arr_hour"] = _hours(flights["sched_arr_time"])
    out["scheduled_block_minutes"] = scheduled_block_minutes(flights, airports)
    out["distance"] = flights["distance"].astype("float64")
    out["day_of_week"] = stamp.dt.dayofweek.astype("float64")
    # How busy the published schedule is: known days ahead.
    out["origin_hour_departures"] = flights.groupby([out["date"], flights["origin"], flights["hour"]])[
        "flight"
    ].transform("size").astype("float64")
    out["origin_day_departures"] = flights.groupby([out["date"], flights["origin"]])["flight"].transform("size").astype("float64")
    out["carrier_day_departures"] = flights.groupby([out["date"], flights["carrier"]])["flight"].transform("size").astype("float64")

    _add_plane_features(out, flights, planes)
    _add_weather_at_departure(out, flights, weather)

    trend = weather_trend_features(flights, weather)
    so_far = day_so_far_features(flights, out["scheduled_block_minutes"].to_numpy())
    cutoffs = scheduled_minutes(flights) - CUTOFF_MARGIN_MINUTES
    past = history_features(out[["date", "origin", "dest", "carrier"]], history or {}, cutoffs)
    out = pd.concat([out, trend.set_axis(out.index), so_far.set_axis(out.index), past], axis=1)

    delay = flights["arr_delay"]
    out[LABEL] = (delay >= LATE_MINUTES).astype("Int8").where(delay.notna(), pd.NA)
    return out[list(OUTPUT_COLUMNS)].reset_index(drop=True)

