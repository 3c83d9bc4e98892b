"""Quality rules for feature partitions, as plain functions the asset checks call.

Two kinds (calibrated on all of 2013, bench/gate_calibration.py, docs/gates.md): what the model cannot
use blocks a day (a missing column, a null or duplicate key, a label other than 0/1/missing, an
infinite number, an implausible late rate, a lost flight); what it tolerates only warns. Every number
the model takes has a missing flag, so a feature's null share is a warning with its trend, never a
reason to hold a day back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ml.day_so_far import AIRCRAFT_FEATURES, ORIGIN_FEATURES, WEATHER_TREND_FEATURES
from ml.features import FEATURE_COLUMNS, KEY_COLUMNS, LABEL, NUMERIC_FEATURES, OUTPUT_COLUMNS, WEATHER_FEATURES
from ml.history import HISTORY_FEATURES

#: Null share above which a feature is warned about; the rest above DEFAULT_MAX_NULL_SHARE.
MAX_NULL_SHARE = {
    "wind_gust": 0.95,  # only reported when gusting
    "plane_age": 0.30,  # ~17% of 2013 tail numbers are not in the registry
    "plane_seats": 0.30,
    "plane_engines": 0.30,
    "pressure": 0.30,
    # the day so far: absent by design for a plane's first departure of the day, or before the
    # first departure of the origin / carrier; the 3-hour weather trend needs two reports
    **dict.fromkeys(AIRCRAFT_FEATURES[1:], 1.0),
    **dict.fromkeys((c for c in ORIGIN_FEATURES if c.endswith(("mean_delay", "p90_delay"))), 0.5),
    **dict.fromkeys(WEATHER_TREND_FEATURES, 0.5),
    **dict.fromkeys(HISTORY_FEATURES, 1.0),  # the first days of the record have no earlier days
}
DEFAULT_MAX_NULL_SHARE = 0.10
LABEL_RATE_BOUNDS = (0.02, 0.90)
"""A day's late rate outside these is a broken label (a dropped or rescaled arr_delay), not weather: 2013's
daily rates span 0.042–0.792 (three storm days above the former 0.70 bound, bench/gate_calibration.py)."""


@dataclass
class RuleOutcome:
    passed: bool
    detail: str
    values: dict[str, float]


def null_shares(frames: dict[str, pd.DataFrame], weather_missing: set[str]) -> RuleOutcome:
    """Null share per feature over the range; weather features skip days whose weather was held back.

    A warning, not a gate: the model takes every missing number (missing flag) and category (unknown bucket).
    """
    all_rows = pd.concat(frames.values(), ignore_index=True) if frames else pd.DataFrame(columns=FEATURE_COLUMNS)
    with_weather = [f for k, f in frames.items() if k not in weather_missing]
    weather_rows = pd.concat(with_weather, ignore_index=True) if with_weather else all_rows.iloc[:0]
    shares, breaches = {}, []
    for column in FEATURE_COLUMNS:
        rows = weather_rows if column in WEATHER_FEATURES else all_rows
        share = float(rows[column].isna().mean()) if len(rows) else 0.0
        shares[column] = share
        limit = MAX_NULL_SHARE.get(column, DEFAULT_MAX_NULL_SHARE)
        if share > limit:
            breaches.append(f"{column} {share:.1%} > {limit:.0%}")
    return RuleOutcome(not breaches, "; ".join(breaches) or "all within limits", shares)


def label_rate(frames: dict[str, pd.DataFrame]) -> RuleOutcome:
    labels = pd.concat([f[LABEL] for f in frames.values()]) if frames else pd.Series(dtype="Int8")
    labelled = labels.dropna()
    rate = float(labelled.astype("float64").mean()) if len(labelled) else float("nan")
    low, high = LABEL_RATE_BOUNDS
    passed = bool(len(labelled)) and low <= rate <= high
    return RuleOutcome(passed, f"late rate {rate:.3f} (bounds {low}–{high})", {"label_rate": rate, "labelled": float(len(labelled))})


def row_counts_match(features: dict[str, pd.DataFrame], raw_rows: dict[str, int]) -> RuleOutcome:
    """Every scheduled flight of the raw day has a feature row (no exclusions: cancelled keep a NA label)."""
    mismatched = {k: (len(f), raw_rows.get(k, -1)) for k, f in features.items() if len(f) != raw_rows.get(k, -1)}
    detail = "; ".join(f"{k}: {a} features vs {b} raw" for k, (a, b) in list(mismatched.items())[:5])
    return RuleOutcome(not mismatched, detail or "one feature row per raw flight", {"partitions": float(len(features))})


def null_shares_by_day(frames: dict[str, pd.DataFrame], features: tuple[str, ...] = FEATURE_COLUMNS) -> dict[str, dict[str, float]]:
    """``{day: {feature: null share}}``: each day's trend point (the asset logs one observation per day)."""
    return {day: {c: float(f[c].isna().mean()) if len(f) else 0.0 for c in features} for day, f in frames.items()}


def input_problems(frame: pd.DataFrame) -> list[str]:
    """Why one day's features cannot be used by the model (empty: they can).

    Every output column present (the preprocessor needs each feature, training the label), key
    columns never null and unique, the label 0, 1 or missing (a cancelled flight), no infinite number.
    """
    missing = [c for c in OUTPUT_COLUMNS if c not in frame.columns]
    if missing:
        return [f"column(s) missing: {', '.join(missing)}"]
    problems = []
    null_keys = {c: int(n) for c, n in frame[list(KEY_COLUMNS)].isna().sum().items() if n}
    if null_keys:
        problems.append(f"null keys: {null_keys}")
    duplicates = int(frame.duplicated(list(KEY_COLUMNS)).sum())
    if duplicates:
        problems.append(f"{duplicates} duplicate key(s) ({', '.join(KEY_COLUMNS)})")
    labels = pd.to_numeric(frame[LABEL], errors="coerce")
    bad_labels = int((frame[LABEL].notna() & ~labels.isin([0, 1])).sum())
    if bad_labels:
        problems.append(f"{bad_labels} label(s) not 0/1/missing")
    numbers = frame[list(NUMERIC_FEATURES)].apply(pd.to_numeric, errors="coerce").astype("float64")
    infinite = {c: int(n) for c, n in np.isinf(numbers).sum().items() if n}
    if infinite:
        problems.append(f"infinite values: {infinite}")
    return problems


def model_inputs_intact(frames: dict[str, pd.DataFrame]) -> RuleOutcome:
    """``input_problems`` of every day of the range: the blocking gate of what the model cannot use."""
    blocked = {day: problems for day, f in frames.items() if (problems := input_problems(f))}
    detail = "; ".join(f"{day}: {', '.join(p)}" for day, p in list(blocked.items())[:5])
    return RuleOutcome(not blocked, detail or "every column, key and label usable",
                       {"days_checked": float(len(frames)), "days_blocked": float(len(blocked))})
