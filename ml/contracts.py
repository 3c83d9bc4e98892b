"""Data contracts of the landing zone: the columns, types, keys and valid ranges of each dataset.

One declaration per dataset is the single source of truth for the CSV parser (``ml.parsing``)
and the Great Expectations suites (``ml.expectations``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

VERSION = "2"
"""Bump when what this module computes changes: the assets built on it become stale (assets/versions.py)."""

ORIGINS = ("EWR", "JFK", "LGA")
ALL_ROWS = "all"  # the one partition key of an unpartitioned table


@dataclass(frozen=True)
class Column:
    """One column of a contract: its pandas dtype and what values are valid."""

    name: str
    dtype: str  # a pandas dtype: Int16, Int32, float64, string, datetime64[ns, UTC]
    nullable: bool = True
    min_value: float | None = None
    max_value: float | None = None
    value_set: tuple[str, ...] | None = None
    regex: str | None = None
    hhmm: bool = False  # a clock time written as HHMM: the last two digits are minutes < 60
    # A nullable column may still not be empty for a whole partition (a producer dropped it),
    # unless the world allows it: no gusts on a calm day.
    may_be_all_null: bool = False
    # A sensor reading: an impossible value is one faulty report, nulled row by row (the row's other
    # readings kept) while few enough of the day's rows have one (``Contract.max_nulled_share``).
    reading: bool = False


@dataclass(frozen=True)
class Contract:
    """What a landing file of one dataset must hold."""

    dataset: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    date_columns: tuple[str, str, str] | None = ("year", "month", "day")
    description: str = ""
    max_nulled_share: float = 0.0
    """The largest share of a partition's rows whose impossible readings in one column are set to null
    (``Column.reading``); above it the values stay and the partition is held back whole."""
    names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(c.name for c in self.columns))

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


def _date_cols() -> tuple[Column, ...]:
    return (
        Column("year", "Int16", nullable=False, min_value=1990, max_value=2100),
        Column("month", "Int16", nullable=False, min_value=1, max_value=12),
        Column("day", "Int16", nullable=False, min_value=1, max_value=31),
    )


FLIGHTS = Contract(
    dataset="flights",
    description="Departures from New York airports, one row per scheduled flight.",
    columns=(
        *_date_cols(),
        Column("dep_time", "Int16", min_value=1, max_value=2400, hhmm=True),
        Column("sched_dep_time", "Int16", nullable=False, min_value=0, max_value=2359, hhmm=True),
        Column("dep_delay", "float64", min_value=-24 * 60, max_value=48 * 60),
        Column("arr_time", "Int16", min_value=1, max_value=2400, hhmm=True),
        Column("sched_arr_time", "Int16", nullable=False, min_value=0, max_value=2359, hhmm=True),
        Column("arr_delay", "float64", min_value=-24 * 60, max_value=48 * 60),
        Column("carrier", "string", nullable=False, regex=r"^[A-Z0-9]{2}$"),
        Column("flight", "Int32", nullable=False, min_value=1, max_value=9999),
        Column("tailnum", "string", regex=r"^[A-Z0-9]{2,7}$"),
        Column("origin", "string", nullable=False, value_set=ORIGINS),
        Column("dest", "string", nullable=False, regex=r"^[A-Z0-9]{3}$"),
        Column("air_time", "float64", min_value=1, max_value=24 * 60),
        Column("distance", "float64", nullable=False, min_value=1, max_value=10_000),
        Column("hour", "Int16", nullable=False, min_value=0, max_value=23),
        Column("minute", "Int16", nullable=False, min_value=0, max_value=59),
        Column("time_hour", "datetime64[ns, UTC]", nullable=False),
    ),
    key=("carrier", "flight", "origin", "sched_dep_time"),
)

WEATHER = Contract(
    dataset="weather",
    description="Hourly weather observations at the three New York airports.",
    columns=(
        Column("origin", "string", nullable=False, value_set=ORIGINS),
        *_date_cols(),
        Column("hour", "Int16", nullable=False, min_value=0, max_value=23),
        Column("temp", "float64", min_value=-60, max_value=130, reading=True),  # °F
        Column("dewp", "float64", min_value=-80, max_value=100, reading=True),  # °F
        Column("humid", "float64", min_value=0, max_value=100, reading=True),  # %
        Column("wind_dir", "float64", min_value=0, max_value=360, reading=True),  # degrees
        Column("wind_speed", "float64", min_value=0, max_value=200, reading=True),  # mph; record gust on Earth is 253
        Column("wind_gust", "float64", min_value=0, max_value=260, reading=True, may_be_all_null=True),  # 50 calm days in 2013
        Column("precip", "float64", min_value=0, max_value=10, reading=True),  # inches per hour
        Column("pressure", "float64", min_value=870, max_value=1090, reading=True),  # millibars
        Column("visib", "float64", min_value=0, max_value=100, reading=True),  # miles
        Column("time_hour", "datetime64[ns, UTC]", nullable=False),
    ),
    # time_hour, not (year, month, day, hour): the local hour repeats when DST ends.
    key=("origin", "time_hour"),
    # 3 of a day's 72 hourly reports (3 airports × 24): a faulty reading is one report's fault; more
    # in one column looks like a broken feed, and the day is held back.
    max_nulled_share=0.05,
)

PLANES = Contract(
    dataset="planes",
    description="Aircraft registry: build year, type, maker, model, engines, seats.",
    columns=(
        Column("tailnum", "string", nullable=False),
        Column("year", "Int16", min_value=1900, max_value=2100),
        Column("type", "string"),
        Column("manufacturer", "string"),
        Column("model", "string"),
        Column("engines", "Int16", min_value=0, max_value=8),
        Column("seats", "Int16", min_value=1, max_value=1000),
        Column("speed", "float64", min_value=0, max_value=1000),
        Column("engine", "string"),
    ),
    key=("tailnum",),
    date_columns=None,
)

AIRPORTS = Contract(
    dataset="airports",
    description="Airports by FAA code: name, location, altitude and time zone.",
    columns=(
        Column("faa", "string", nullable=False),
        Column("name", "string"),
        Column("lat", "float64", min_value=-90, max_value=90),
        Column("lon", "float64", min_value=-180, max_value=180),
        Column("alt", "float64", min_value=-1500, max_value=30_000),
        Column("tz", "float64", min_value=-12, max_value=14),
        Column("dst", "string"),
        Column("tzone", "string"),
    ),
    key=("faa",),
    date_columns=None,
)

CONTRACTS = {c.dataset: c for c in (FLIGHTS, WEATHER, PLANES, AIRPORTS)}
