"""Where producers drop files in the lake, and how a key names its partition."""

from __future__ import annotations

import datetime as dt


def landing_key(dataset: str, partition: str) -> str:
    """Where producers drop a day of ``dataset``: ``landing/flights/date=2013-01-01.csv``."""
    return f"landing/{dataset}/date={partition}.csv"


def reference_key(dataset: str) -> str:
    """Where a reference table (planes, airports) lands."""
    return f"landing/reference/{dataset}.csv"


def partition_of(key: str) -> str | None:
    """The day a landing key belongs to, or None when the name is not ``date=YYYY-MM-DD.csv``."""
    name = key.rsplit("/", 1)[-1]
    if not (name.startswith("date=") and name.endswith(".csv")):
        return None
    day = name[len("date=") : -len(".csv")]
    try:
        return dt.date.fromisoformat(day).isoformat() if len(day) == 10 else None
    except ValueError:
        return None
