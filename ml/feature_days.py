"""Features for a range of days in one pass, from whatever reads the stored tables (injected)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ml.tables import RAW_UPSTREAMS, Table

VERSION = "2"
"""Bump when the output of features over a range changes (tests/test_module_versions.py)."""

if TYPE_CHECKING:  # pandas loads in the step, not when the code location imports the asset modules
    import pandas as pd

HISTORY_TABLE = Table.LATE_HISTORY
"""Each day's late rates of the days before it (``ml/history.py``); a day without one gets missing history features."""

FrameReader = Callable[[str, "str | None"], "pd.DataFrame | None"]
"""``read(table, partition)``: a stored table (partition None: unpartitioned) as pandas, or None when absent."""


@dataclass(frozen=True)
class DayFeatures:
    """One day's outcome: its features (None: no raw flights), whether weather was there, raw rows, lineage."""

    features: pd.DataFrame | None
    had_weather: bool
    raw_rows: int
    built_from: dict[str, str | None] | None


@dataclass(frozen=True)
class FeatureRange:
    """A range of days' features, and what the checks and the catalog say about them."""

    frames: dict[str, pd.DataFrame]
    """``{day: features}`` of the days that had raw flights."""
    days_without_flights: list[str]
    """Days with no raw flights (held back or never ingested), sorted: they get no features."""
    days_without_weather: set[str]
    """Days with features but no raw weather (held back): their weather features are missing."""
    raw_rows: dict[str, int]
    """Raw flights of each day with features: the checks expect one feature row each."""
    built_from: dict[str, dict[str, str | None]]
    """Each day's lineage, ``{upstream: stored version}``, recorded with its file."""
    cancelled: int
    """Flights with a missing label (cancelled or diverted): kept, left out of training."""
    rows: int

    @classmethod
    def of(cls, parts: Iterable[Mapping[str, DayFeatures]]) -> FeatureRange:
        """The range made of per-day outcomes (one mapping, or one per chunk of days)."""
        days = {day: outcome for part in parts for day, outcome in part.items()}
        built = {day: d for day, d in days.items() if d.features is not None}
        frames = {day: d.features for day, d in built.items()}
        return cls(
            frames=frames,
            days_without_flights=sorted(day for day in days if day not in built),
            days_without_weather={day for day, d in built.items() if not d.had_weather},
            raw_rows={day: d.raw_rows for day, d in built.items()},
            built_from={day: d.built_from for day, d in built.items()},
            cancelled=int(sum(f["arrived_late"].isna().sum() for f in frames.values())),
            rows=int(sum(len(f) for f in frames.values())),
        )


def features_for_days(
    read: FrameReader,
    days: list[str],
    versions: Mapping[str, Mapping[str, str]],
    planes: pd.DataFrame | None = None,
) -> dict[str, DayFeatures]:
    """Build features for many days in one pass: ``{day: DayFeatures}``.

    Per-day pandas work costs ~50 ms of overhead whatever the rows; concatenating the days first
    makes a year ~15× cheaper. Runs in process or as a Dask task (``read`` must then pickle: a
    function of the lake's settings, never a client). ``versions`` holds ``{upstream: {day: stored
    version}}`` listed before reading, so a raw day rewritten meanwhile makes the features look
    stale to training (excluded), never current; ``built_from`` is that version of each raw day used
    (None: absent).
    """
    import pandas as pd

    from ml.features import build_features

    if planes is None:
        planes = read(Table.PLANES, None)
    airports = read(Table.AIRPORTS, None)
    if airports is None:
        raise FileNotFoundError("flight_features: the airports table is missing; materialize `airports` first")
    flights = {d: read(Table.RAW_FLIGHTS, d) for d in days}
    weather = {d: read(Table.RAW_WEATHER, d) for d in days}
    present = [d for d in days if flights[d] is not None]
    out = {d: DayFeatures(None, weather[d] is not None, 0, None) for d in days if flights[d] is None}
    if not present:
        return out
    all_flights = pd.concat([flights[d] for d in present], ignore_index=True)
    observed = [w for d, w in weather.items() if w is not None and d in present]
    all_weather = pd.concat(observed, ignore_index=True) if observed else None
    history = {d: read(HISTORY_TABLE, d) for d in present}
    features = build_features(all_flights, all_weather, planes, airports, {d: h for d, h in history.items() if h is not None})
    for day, rows in features.groupby("date", sort=False):
        built_from = {upstream: versions.get(upstream, {}).get(day) for upstream in RAW_UPSTREAMS}
        out[day] = DayFeatures(rows.reset_index(drop=True), weather[day] is not None, len(flights[day]), built_from)
    return out
