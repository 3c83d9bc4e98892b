"""How well served predictions did, once the flights they were about have landed (or not)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ml.evidence import Interval
from ml.features import LABEL

VERSION = "3"
"""Bump when what this module computes changes: the assets built on it become stale (assets/versions.py)."""

KEYS = ("date", "carrier", "flight", "origin")
CALIBRATION_BINS = 10
_EPS = 1e-7


@dataclass
class PerformanceResult:
    """Metrics of served scores against realised labels, and what could not be scored.

    Metrics are None when no joined row has a label, and ``roc_auc`` also when the labelled rows
    are all one class (a day with no late flight). ``calibration`` has one row per score bin of
    width 0.1: ``lower``, ``upper``, ``count``, ``mean_score``, ``observed_rate`` (NaN when empty).
    """

    roc_auc: float | None
    log_loss: float | None
    brier: float | None
    ece: float | None
    positive_rate: float | None
    mean_score: float | None
    rows_joined: int
    rows_unmatched: int
    rows_cancelled: int
    rows_invalid_score: int
    duplicates_dropped: int
    outcomes_without_prediction: int
    model_versions: dict[str, int]
    calibration: pd.DataFrame = field(repr=False)
    scored: pd.DataFrame = field(repr=False, default_factory=lambda: pd.DataFrame(columns=list(SCORED_COLUMNS)))
    """The labelled flights behind the metrics: ``label``, ``score``, ``model_version`` (for windows of days)."""

    def metrics(self) -> dict[str, float | int | None]:
        """The scalar fields, e.g. for asset metadata."""
        return {k: v for k, v in vars(self).items() if k not in ("calibration", "model_versions", "scored")}


SCORED_COLUMNS = ("label", "score", "model_version")


@dataclass(frozen=True)
class WindowEvidence:
    """The serving model's realised ROC AUC over a window of labelled days, against what it promised.

    ``fails`` when the window holds at least the minimum of labelled flights and its interval's upper
    bound lies more than the tolerance below ``expected`` (the model's test ROC AUC): the model is worse
    than promised beyond the noise of these flights, not on one bad day.
    """

    model_version: str | None
    days: tuple[str, ...]
    interval: Interval | None
    expected: float | None
    tolerance: float
    fails: bool
    reason: str

    def as_record(self) -> dict:
        return {"model_version": self.model_version, "days": list(self.days), "expected": self.expected,
                "tolerance": self.tolerance, "fails": self.fails, "reason": self.reason,
                **({"interval": self.interval.as_record()} if self.interval else {})}


def windowed_performance(
    scored_by_day: dict[str, pd.DataFrame], model_version: str | None, expected: float | None, *,
    tolerance: float, level: float, min_labelled: int, min_days: int = 1,
) -> WindowEvidence:
    """Pool the flights ``model_version`` scored on the window's days (``{day: PerformanceResult.scored}``)
    and decide whether its realised ROC AUC is, beyond the noise, below ``expected`` − ``tolerance``.

    A window in which the model scored flights on fewer than ``min_days`` days is reported, never judged:
    the tolerance was calibrated on full windows, and a few days pooled are not a smaller full window.
    Days differ in their late rate, so a model whose scores run against it from one day to the next has a
    pooled AUC below every single day's (2013-06-20..22 under the Jan–Mar model: 0.636 pooled, days
    0.633–0.690); over a full window such day-level swings average out, and the calibration saw them."""
    from ml.evidence import auc_interval

    days = tuple(sorted(scored_by_day))
    frames = [f[f["model_version"].astype(str) == str(model_version)] for f in scored_by_day.values() if len(f)]
    served_days = sum(1 for f in frames if len(f))
    pooled = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(SCORED_COLUMNS))
    y = pooled["label"].astype("int64").to_numpy()
    unscorable = len(y) < min_labelled or len(np.unique(y)) < 2 or expected is None or served_days < min_days
    if unscorable:
        why = ("no expected ROC AUC for the serving model" if expected is None
               else f"v{model_version} scored flights on {served_days} day(s), fewer than the {min_days} of a full window"
               if served_days < min_days
               else f"{len(y):,} labelled flights of v{model_version} in {len(days)} day(s), fewer than {min_labelled:,}")
        return WindowEvidence(model_version, days, None, expected, tolerance, False, f"not judged: {why}")
    interval = auc_interval(y, pooled["score"].astype("float64").to_numpy(), level)
    fails = interval.high < expected - tolerance
    relation = "below" if fails else "within"
    return WindowEvidence(model_version, days, interval, expected, tolerance, fails,
                          f"v{model_version} realised ROC AUC {interval.describe()} over {days[0]}..{days[-1]}: "
                          f"{relation} {tolerance} of its test ROC AUC {expected:.4f}")


def _aligned_keys(predictions: pd.DataFrame, outcomes: pd.DataFrame, keys: list[str]):
    """Key columns of one dtype on both sides: served ids arrive as int64/object, features as Int32/string."""
    left, right = predictions.copy(), outcomes[[*keys, LABEL]].copy()
    for key in keys:
        if pd.api.types.is_numeric_dtype(left[key]) and pd.api.types.is_numeric_dtype(right[key]):
            left[key], right[key] = left[key].astype("Int64"), right[key].astype("Int64")
        else:
            left[key], right[key] = left[key].astype("string"), right[key].astype("string")
    return left, right


def _latest(predictions: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One prediction per flight: the latest by ``served_at`` if present, else the last row given."""
    if "served_at" in predictions.columns:
        predictions = predictions.sort_values("served_at", kind="stable")
    return predictions.drop_duplicates(keys, keep="last")


def calibration_table(y: np.ndarray, p: np.ndarray, bins: int = CALIBRATION_BINS) -> pd.DataFrame:
    """Mean score vs observed late rate per equal-width score bin (1.0 falls in the last bin)."""
    which = np.minimum((p * bins).astype(int), bins - 1)
    frame = pd.DataFrame({"bin": which, "score": p, "label": y})
    grouped = frame.groupby("bin").agg(count=("label", "size"), mean_score=("score", "mean"), observed_rate=("label", "mean"))
    table = grouped.reindex(range(bins))
    table["count"] = table["count"].fillna(0).astype(int)
    table.insert(0, "lower", np.arange(bins) / bins)
    table.insert(1, "upper", np.arange(1, bins + 1) / bins)
    return table.rename_axis("bin").reset_index()


def expected_calibration_error(table: pd.DataFrame) -> float:
    """Σ over bins of (share of rows) × |mean score − observed rate|."""
    filled = table[table["count"] > 0]
    weights = filled["count"] / filled["count"].sum()
    return float((weights * (filled["mean_score"] - filled["observed_rate"]).abs()).sum())


def _require_joinable(predictions: pd.DataFrame, outcomes: pd.DataFrame, keys: list[str]) -> None:
    for frame, name, needed in ((predictions, "predictions", [*keys, "score"]), (outcomes, "outcomes", [*keys, LABEL])):
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise ValueError(f"{name}: column(s) {missing} missing; expected at least {needed}")
    if outcomes.duplicated(keys).any():
        raise ValueError(
            f"outcomes: {int(outcomes.duplicated(keys).sum())} rows share keys {keys} with another row; "
            "each flight must appear once (check the features partition for duplicated days)"
        )


def served_performance(
    predictions: pd.DataFrame, outcomes: pd.DataFrame, keys=KEYS
) -> PerformanceResult:
    """Join served predictions (``keys`` + ``score`` + ``model_version``) to realised outcomes.

    ``outcomes`` is a features frame: one row per scheduled flight with ``LABEL``, which is NA for
    flights that never arrived (cancelled or diverted): those are excluded and counted in
    ``rows_cancelled``. Predictions served twice for a flight keep the latest by ``served_at`` when
    that column exists, else the last row; scores that are NaN or outside [0, 1] are excluded and
    counted. Predictions with no outcome row are ``rows_unmatched``.
    """
    keys = list(keys)
    _require_joinable(predictions, outcomes, keys)
    left, right = _aligned_keys(predictions, outcomes, keys)
    latest = _latest(left, keys)
    score = pd.to_numeric(latest["score"], errors="coerce")
    valid = score.between(0, 1)
    joined = latest[valid].merge(right, on=keys, how="left", indicator=True, validate="one_to_one")
    matched = joined["_merge"] == "both"
    labelled = matched & joined[LABEL].notna()
    scored = joined[labelled]

    y = scored[LABEL].astype("int64").to_numpy()
    p = pd.to_numeric(scored["score"]).astype("float64").to_numpy()
    table = calibration_table(y, p)
    versions = scored["model_version"].astype(str).value_counts().to_dict() if "model_version" in scored else {}
    result = dict(
        rows_joined=int(labelled.sum()),
        rows_unmatched=int((~matched).sum()),
        rows_cancelled=int((matched & joined[LABEL].isna()).sum()),
        rows_invalid_score=int((~valid).sum()),
        duplicates_dropped=len(left) - len(latest),
        outcomes_without_prediction=len(right) - len(right[keys].merge(latest[keys], on=keys)),
        model_versions={str(k): int(v) for k, v in versions.items()},
        calibration=table,
        scored=pd.DataFrame({"label": y, "score": p, "model_version": scored["model_version"].astype(str).to_numpy()
                             if "model_version" in scored else None}),
    )
    if not len(y):
        return PerformanceResult(None, None, None, None, None, None, **result)

    from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

    clipped = np.clip(p, _EPS, 1 - _EPS)
    return PerformanceResult(
        roc_auc=float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else None,
        log_loss=float(log_loss(y, clipped, labels=[0, 1])),
        brier=float(brier_score_loss(y, p, pos_label=1)),
        ece=expected_calibration_error(table),
        positive_rate=float(y.mean()),
        mean_score=float(p.mean()),
        **result,
    )
