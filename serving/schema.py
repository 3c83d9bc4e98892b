"""The request and response of `POST /predict`: one scheduled flight's pre-departure features.

The caller sends the model's features (what ``ml.features.build_features`` computes from the
schedule, the plane registry and the origin's last weather report): the service does not look up
weather or planes itself, so online and batch predictions see exactly the same inputs. Ranges are
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
