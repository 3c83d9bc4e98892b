"""When a flight is scheduled to arrive, and when it did: instants (minutes since 1970 UTC) from local clock times.

The 2013 airports table lacks the time zones of Puerto Rico and the Virgin Islands; an arrival's
instant still needs one (it orders the arrival among the events of the day), so those four airports
take their zone from ``FALLBACK_ZONES``. The scheduled block time feature keeps NaN there
(``ml.features.scheduled_block_minutes``): the model was trained so.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

NEW_YORK = "America/New_York"
FALLBACK_ZONES = {"BQN": "America/Puerto_Rico", "PSE": "America/Puerto_Rico", "SJU": "America/Puerto_Rico",
                  "STT": "America/St_Thomas"}
"""Atlantic Standard Time all year (no daylight saving)."""


def _scheduled_departure(flights: pd.DataFrame) -> pd.Series:
    return flights["time_hour"].astype("datetime64[ns, UTC]") + pd.to_timedelta(
        flights["minute"].astype("float64"), unit="min")


def scheduled_arrival_utc(flights: pd.DataFrame, airports: pd.DataFrame, fallback_zones: bool = False) -> pd.Series:
    """Scheduled arrival instants: the local ``sched_arr_time`` on the flight's date, in the destination's zone,
    moved past the scheduled departure by whole days (overnight flights). NaT where the zone is unknown
    or the local time does not exist or is ambiguous (daylight-saving changes), unless ``fallback_zones``."""
    day = pd.to_datetime({"year": flights["year"], "month": flights["month"], "day": flights["day"]})
    hhmm = flights["sched_arr_time"].astype("float64")
    local_arrival = day + pd.to_timedelta(np.floor(hhmm / 100) * 60 + hhmm % 100, unit="min")
    zone_of = airports.drop_duplicates("faa").set_index("faa")["tzone"]
    if fallback_zones:
        zone_of = pd.concat([zone_of[zone_of.notna() & (zone_of != "")],
                             pd.Series(FALLBACK_ZONES)]).groupby(level=0).first()
    zones = flights["dest"].map(zone_of)
    arrival = pd.Series(pd.NaT, index=flights.index, dtype="datetime64[ns, UTC]")
    for zone, rows in local_arrival.groupby(zones, sort=False):
        ambiguous = np.ones(len(rows), dtype=bool) if fallback_zones else "NaT"
        arrival.loc[rows.index] = rows.dt.tz_localize(
            str(zone), ambiguous=ambiguous, nonexistent="shift_forward"
        ).dt.tz_convert("UTC")
    departure = _scheduled_departure(flights)
    days_after = np.floor((arrival - departure).dt.total_seconds() / 86_400)
    return arrival - pd.to_timedelta(days_after.fillna(0), unit="D")


def arrival_minutes(flights: pd.DataFrame, airports: pd.DataFrame) -> np.ndarray:
    """Actual arrival of flights with an ``arr_delay``, minutes since 1970 UTC (int64): scheduled arrival plus the delay.

    A destination with no known zone falls back to the scheduled departure plus the air time and delay,
    rounded up to the next whole day of that: such an arrival is counted late rather than early.
    """
    scheduled = scheduled_arrival_utc(flights, airports, fallback_zones=True)
    minutes = (scheduled - pd.Timestamp(0, tz="UTC")).dt.total_seconds() / 60
    landed = (minutes + flights["arr_delay"].astype("float64")).round()
    unknown = landed.isna()
    if unknown.any():
        departure = (_scheduled_departure(flights[unknown]) - pd.Timestamp(0, tz="UTC")).dt.total_seconds() // 60
        landed[unknown] = (departure // 1440 + 2) * 1440
    return landed.to_numpy().astype("int64")
