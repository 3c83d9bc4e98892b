"""Quality rules for feature partitions, as plain functions the asset checks call."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ml.day_so_far import AIRCRAFT_FEATURES, ORIGIN_FEATURES, WEATHER_TREND_FEATURES
from ml.features import FEATURE_COLUMNS, LABEL, WEATHER_FEATURES
from ml.history import HISTORY_FEATURES

#: Null share allowed per feature; the rest may be at most DEFAULT_MAX_NULL_SHARE.
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
LABEL_RATE_BOUNDS = (0.02, 0.70)


@dataclass
class RuleOutcome:
    passed: bool
    detail: str
    values: dict[str, float]


def null_shares(frames: dict[str, pd.DataFrame], weather_missing: set[str]) -> RuleOutcome:
    """Null share per feature over the range; weather features skip days whose weather was held back."""
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
