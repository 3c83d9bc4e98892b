"""The training window: which feature days it spans, how it splits by time, and its fingerprint."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass

import pandas as pd

from ml.features import LABEL

VERSION = "1"
"""Bump when what this module computes changes: the assets built on it become stale (assets/versions.py)."""

SPLIT = "split"
TRAIN, VALIDATION, TEST = "train", "validation", "test"


@dataclass(frozen=True)
class WindowSpec:
    """Up to ``window_days`` days ending at ``cutoff``; the last days are test, those before validation."""

    window_days: int = 120
    cutoff: str | None = None  # last day included; default: the newest available
    validation_days: int | None = None  # default: 15 % of the window's days
    test_days: int | None = None  # default: 15 % of the window's days


def window_days(available: list[str], spec: WindowSpec) -> list[str]:
    """The available days inside the window, oldest first."""
    if not available:
        return []
    cutoff = spec.cutoff or max(available)
    first = (dt.date.fromisoformat(cutoff) - dt.timedelta(days=spec.window_days - 1)).isoformat()
    return sorted(d for d in available if first <= d <= cutoff)


def split_days(days: list[str], spec: WindowSpec) -> dict[str, str]:
    """Map each day to train / validation / test, strictly in time order (never rows shuffled across time)."""
    n = len(days)
    test = spec.test_days if spec.test_days is not None else max(1, round(0.15 * n))
    validation = spec.validation_days if spec.validation_days is not None else max(1, round(0.15 * n))
    if n < test + validation + 1:
        raise ValueError(
            f"training window has {n} day(s): too few for {validation} validation and {test} test day(s)"
        )
    out = {}
    for i, day in enumerate(days):
        out[day] = TEST if i >= n - test else VALIDATION if i >= n - test - validation else TRAIN
    return out


def assign_splits(features: pd.DataFrame, splits: dict[str, str]) -> pd.DataFrame:
    """Labelled rows only (cancelled flights have no label), each tagged with its split."""
    labelled = features[features[LABEL].notna()]
    return labelled.assign(**{SPLIT: labelled["date"].map(splits)})


def fingerprint(versions: dict[str, str]) -> str:
    """A short hash of the partitions and their stored versions: equal data, equal fingerprint."""
    payload = json.dumps(sorted(versions.items())).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


def unusable_days(
    days: list[str], built_from: dict[str, dict | None], current: dict[str, dict[str, str]]
) -> dict[str, str]:
    """Days whose features must not be trained on, each with the reason.

    ``built_from[day]`` maps each upstream (``raw_flights``, ``raw_weather``) to the stored version
    the day's features were built from (None: it was absent), or is None when the day has no
    features or they record nothing. ``current[upstream]`` maps days to the versions stored now. A
    day is usable only if every upstream is exactly as it was when its features were built: a raw
    day held back or rewritten since then leaves stale features, which are excluded, never used.
    """
    out = {}
    for day in days:
        if day not in built_from:
            out[day] = "no flight_features (not built yet, or removed because its checks failed)"
            continue
        recorded = built_from[day]
        if not recorded:
            out[day] = "features record no raw versions (built before lineage was kept); rebuild flight_features"
            continue
        changed = [
            upstream for upstream, version in sorted(recorded.items())
            if current.get(upstream, {}).get(day) != version
        ]
        if changed:
            out[day] = "; ".join(_change(upstream, recorded[upstream], current.get(upstream, {}).get(day)) for upstream in changed)
    return out


def _change(upstream: str, then: str | None, now: str | None) -> str:
    if then is None:
        return f"{upstream} arrived after these features were built; rebuild flight_features"
    if now is None:
        return f"{upstream} was held back or removed after these features were built"
    return f"{upstream} was rewritten after these features were built; rebuild flight_features"
