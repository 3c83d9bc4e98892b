"""Where producers drop files in the lake, and how a key names its partition."""

from __future__ import annotations

import datetime as dt

LANDING_PREFIX = "landing/"
LANDING_SUFFIX = ".csv"
REFERENCE_PREFIX = f"{LANDING_PREFIX}reference/"


def dataset_prefix(dataset: str) -> str:
    """The folder producers drop ``dataset``'s days in: ``landing/flights/``."""
    return f"{LANDING_PREFIX}{dataset}/"


def landing_key(dataset: str, partition: str) -> str:
    """Where producers drop a day of ``dataset``: ``landing/flights/date=2013-01-01.csv``."""
    return f"{dataset_prefix(dataset)}date={partition}{LANDING_SUFFIX}"


def reference_key(dataset: str) -> str:
    """Where a reference table (planes, airports) lands."""
    return f"{REFERENCE_PREFIX}{dataset}{LANDING_SUFFIX}"


def reference_dataset_of(key: str) -> str | None:
    """The reference table ``key`` delivers (``planes`` for ``landing/reference/planes.csv``), or None."""
    if not (key.startswith(REFERENCE_PREFIX) and key.endswith(LANDING_SUFFIX)):
        return None
    name = key[len(REFERENCE_PREFIX):-len(LANDING_SUFFIX)]
    return name if name and "/" not in name else None


def partition_of(key: str) -> str | None:
    """The day a landing key belongs to, or None when the name is not ``date=YYYY-MM-DD.csv``."""
    name = key.rsplit("/", 1)[-1]
    if not (name.startswith("date=") and name.endswith(LANDING_SUFFIX)):
        return None
    day = name[len("date=") : -len(LANDING_SUFFIX)]
    try:
        return dt.date.fromisoformat(day).isoformat() if len(day) == 10 else None
    except ValueError:
        return None


def daily_partition_of(dataset: str, key: str) -> str | None:
    """The day ``key`` delivers, only when it is exactly where ingestion reads that day."""
    partition = partition_of(key)
    return partition if partition and key == landing_key(dataset, partition) else None


def why_not_a_landing_file(dataset: str, key: str) -> str:
    """Why ``key`` under ``landing/<dataset>/`` is not ingested, in words that say what to do.

    One name per day (``date=YYYY-MM-DD.csv``, uncompressed) keeps one version per partition, so
    a run key and a recorded landing version always refer to the one object ingestion reads.
    Daily files are ~100 kB: compression would save little and add a second name per day.
    """
    name = key.rsplit("/", 1)[-1]
    expected = f"landing/{dataset}/date=YYYY-MM-DD.csv"
    if name.endswith((".gz", ".zip", ".bz2", ".xz", ".zst")):
        return f"compressed files are not accepted: decompress it to {expected}"
    if partition_of(key) and key.count("/") != landing_key(dataset, "x").count("/"):
        return f"it is in a sub-folder; ingestion reads {expected} only"
    return f"its name is not {expected}"
