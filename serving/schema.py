"""The request and response of `POST /predict`: one scheduled flight's pre-departure features.

The caller sends the model's features (what ``ml.features.build_features`` computes from the
schedule, the plane registry, the origin's weather reports and the day so far, as known 15 minutes
before scheduled departure; ``ml.day_so_far.DaySoFar`` computes the day so far from a live feed of
departures): the service does not look up weather, planes or departures itself, so online and batch
predictions see exactly the same inputs. Every feature but the schedule may be null (unknown): the
model has a missing flag for each. Ranges are
physical plausibility, not the training range (the model clips to that); unknown carriers and
airports are valid and share the model's unknown bucket.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ml.features import FEATURE_COLUMNS

MAX_FLIGHTS_PER_REQUEST = 1_000

Code = Annotated[str, StringConstraints(strip_whitespace=True, to_upper=True, min_length=2, max_length=4, pattern=r"^[A-Za-z0-9]+$")]
Hour = Annotated[float, Field(ge=0, le=24)]
Count = Annotated[float, Field(ge=0, le=10_000)]
DelayMinutes = Annotated[float, Field(ge=-1_440, le=2_880)]
DayMinutes = Annotated[float, Field(ge=0, le=2_880)]
Change = Annotated[float, Field(ge=-300, le=300)]


class Flight(BaseModel):
    """A flight as known at its scheduled departure (no dep_time/dep_delay/arr_* ever)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    date: dt.date = Field(description="Scheduled departure date (local); predictions are logged under it.")
    carrier: Code
    flight: int | None = Field(None, ge=0, le=99_999)
    origin: Code
    dest: Code
    sched_dep_hour: Hour = Field(description="Scheduled departure, decimal hours local time (13.5 = 13:30).")
    sched_arr_hour: Hour
    distance: float = Field(gt=0, le=10_000, description="Miles.")
    day_of_week: int = Field(ge=0, le=6, description="Monday = 0.")
    scheduled_block_minutes: float | None = Field(None, ge=0, le=1_440)
    origin_hour_departures: Count | None = None
    origin_day_departures: Count | None = None
    carrier_day_departures: Count | None = None
    plane_age: float | None = Field(None, ge=0, le=120)
    plane_seats: float | None = Field(None, ge=0, le=1_000)
    plane_engines: float | None = Field(None, ge=0, le=8)
    temp: float | None = Field(None, ge=-80, le=140, description="°F")
    dewp: float | None = Field(None, ge=-80, le=120, description="°F")
    humid: float | None = Field(None, ge=0, le=100)
    wind_dir: float | None = Field(None, ge=0, le=360)
    wind_speed: float | None = Field(None, ge=0, le=250, description="mph")
    wind_gust: float | None = Field(None, ge=0, le=300, description="mph")
    precip: float | None = Field(None, ge=0, le=20, description="inches in the hour")
    pressure: float | None = Field(None, ge=850, le=1_100, description="millibars")
    visib: float | None = Field(None, ge=0, le=100, description="miles")
    pressure_change_3h: Change | None = Field(None, description="Last known report minus the one 3 h before it.")
    temp_change_3h: Change | None = None
    visib_change_3h: Change | None = None
    wind_speed_change_3h: Change | None = None
    precip_3h: float | None = Field(None, ge=0, le=60, description="inches over the last 3 known reports")
    origin_recent_departures: Count | None = Field(None, description="Left the origin in the 2 h before the cutoff.")
    origin_recent_mean_delay: DelayMinutes | None = None
    origin_recent_p90_delay: DelayMinutes | None = None
    origin_today_departures: Count | None = None
    origin_today_mean_delay: DelayMinutes | None = None
    origin_overdue: Count | None = Field(None, description="Scheduled before the cutoff, not left by it.")
    origin_overdue_mean_minutes: DayMinutes | None = None
    carrier_origin_recent_departures: Count | None = None
    carrier_origin_recent_mean_delay: DelayMinutes | None = None
    carrier_origin_recent_p90_delay: DelayMinutes | None = None
    carrier_origin_overdue: Count | None = None
    carrier_origin_overdue_mean_minutes: DayMinutes | None = None
    plane_legs_before: Count | None = Field(None, description="The aircraft's departures scheduled earlier today.")
    plane_prev_dep_delay: DelayMinutes | None = None
    plane_prev_overdue_minutes: DayMinutes | None = None
    plane_sched_gap_minutes: DayMinutes | None = None
    plane_propagated_delay: Annotated[float, Field(ge=-2_880, le=2_880)] | None = None
    route_late_rate_28d: float | None = Field(None, ge=0, le=1, description="Late share of the route over the 28 days before.")
    route_flights_28d: Count | None = None
    carrier_late_rate_28d: float | None = Field(None, ge=0, le=1)


class Prediction(BaseModel):
    request_id: str = Field(description="Id of this scored flight; the prediction log's key.")
    delay_probability: float = Field(description="P(arrives 15+ minutes late).")
    model_version: str


Flights = Annotated[list[Flight], Field(min_length=1, max_length=MAX_FLIGHTS_PER_REQUEST)]
"""One request: 1 to MAX_FLIGHTS_PER_REQUEST flights (an empty or oversized batch is a 400)."""


class PredictRequest(BaseModel):
    """The body of ``POST /predict``; any other top-level field is a 400, not silently ignored."""

    model_config = ConfigDict(extra="forbid")

    flights: Flights

assert set(FEATURE_COLUMNS) <= set(Flight.model_fields), "the request must carry every model feature"


REQUEST_COLUMNS = ("date", "carrier", "flight", "origin", "dest", *[c for c in FEATURE_COLUMNS if c not in ("carrier", "origin", "dest")])
"""The fields of a request, in the order the prediction log keeps them."""


def records_from_features(frame) -> list[dict]:
    """Rows of a ``flight_features`` frame as JSON-ready request records (missing values → null)."""
    import json

    return json.loads(frame[list(REQUEST_COLUMNS)].to_json(orient="records", date_format="iso"))
