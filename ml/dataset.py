"""The training window: which feature days it spans, how it splits by time, and its fingerprint."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass

import pandas as pd

from ml.features import LABEL

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
