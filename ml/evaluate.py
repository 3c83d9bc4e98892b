"""Metrics, the scikit-learn baseline, and behavioural tests of a scorer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ml.features import CATEGORICAL_FEATURES, FEATURE_COLUMNS, LABEL

VERSION = "2"
"""Bump when what this module computes changes: the assets built on it become stale (assets/versions.py)."""

Scorer = Callable[[pd.DataFrame], np.ndarray]
ECE_BINS = 15


def expected_calibration_error(y_true: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: |observed late rate − mean predicted probability| per equal-width
    probability bin, weighted by the bin's share of flights."""
    y_true, p = np.asarray(y_true, dtype=np.float64), np.asarray(p, dtype=np.float64)
    if not len(p):
        return float("nan")
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    rows = np.bincount(which, minlength=bins)
    gap = np.abs(np.bincount(which, weights=y_true, minlength=bins) - np.bincount(which, weights=p, minlength=bins))
    return float(gap.sum() / rows.sum())


def classification_metrics(y_true: np.ndarray, p: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    return {
        "roc_auc": float(roc_auc_score(y_true, p)),
        "pr_auc": float(average_precision_score(y_true, p)),
        "log_loss": float(log_loss(y_true, p, labels=[0, 1])),
        "brier": float(brier_score_loss(y_true, p)),
        "ece": expected_calibration_error(y_true, p),
        "positive_rate": float(np.mean(y_true)),
        "rows": float(len(y_true)),
    }


def labels(frame: pd.DataFrame) -> np.ndarray:
    return frame[LABEL].astype("int64").to_numpy()


class Baseline:
    """HistGradientBoosting on the same features: the bar the torch model must reach."""

    def __init__(
        self, max_iter: int = 200, learning_rate: float = 0.1, seed: int = 0, features: tuple[str, ...] = FEATURE_COLUMNS
    ):
        from sklearn.ensemble import HistGradientBoostingClassifier

        self.features = tuple(features)
        self.model = HistGradientBoostingClassifier(
            categorical_features="from_dtype", max_iter=max_iter, learning_rate=learning_rate,
            random_state=seed, early_stopping=False,
        )
        self.categories: dict[str, list[str]] = {}

    def _matrix(self, frame: pd.DataFrame) -> pd.DataFrame:
        x = frame[list(self.features)].copy()
        for column in self.categories:
            x[column] = pd.Categorical(x[column].astype("string"), categories=self.categories[column])
        return x

    def fit(self, frame: pd.DataFrame) -> Baseline:
        # a column missing in every training row carries nothing, and the binning refuses it
        self.features = tuple(c for c in self.features if c in CATEGORICAL_FEATURES or frame[c].notna().any())
        self.categories = {
            c: sorted(frame[c].dropna().astype(str).unique()) for c in CATEGORICAL_FEATURES if c in self.features
        }
        self.model.fit(self._matrix(frame), labels(frame))
        return self

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return self.model.predict_proba(self._matrix(frame))[:, 1]


@dataclass
class BehaviouralResult:
    name: str
    passed: bool
    detail: str


def invariance_to_flight_number(score: Scorer, sample: pd.DataFrame) -> BehaviouralResult:
    """The flight number is an identifier: changing it must not change a prediction."""
    renumbered = sample.assign(flight=(sample["flight"].astype("int64") % 9000) + 1000)
    delta = float(np.max(np.abs(score(sample) - score(renumbered)))) if len(sample) else 0.0
    return BehaviouralResult("invariance_flight_number", delta < 1e-6, f"max change {delta:.2e}")


def heavy_precipitation_does_not_lower_delay(score: Scorer, sample: pd.DataFrame) -> BehaviouralResult:
    """Directional: the same flights in heavy rain (0.3 in/h) are not predicted less likely late than dry."""
    dry = sample.assign(precip=0.0)
    wet = sample.assign(precip=0.3)
    p_dry, p_wet = score(dry), score(wet)
    lowered = float(np.mean(p_wet < p_dry - 0.01))
    passed = float(np.mean(p_wet)) >= float(np.mean(p_dry)) and lowered <= 0.05
    return BehaviouralResult(
        "directional_precipitation",
        passed,
        f"mean p dry {np.mean(p_dry):.3f} → wet {np.mean(p_wet):.3f}; {lowered:.1%} of flights lowered by > 0.01",
    )


def obvious_cases(score: Scorer, sample: pd.DataFrame) -> BehaviouralResult:
    """Minimum functionality: an evening flight in a storm is likelier late than a dawn flight in clear skies."""
    base = sample.head(200)
    storm = base.assign(sched_dep_hour=19.0, precip=0.5, visib=1.0, wind_speed=35.0, wind_gust=50.0,
                        origin_hour_departures=base["origin_hour_departures"].max())
    calm = base.assign(sched_dep_hour=6.0, precip=0.0, visib=10.0, wind_speed=5.0, wind_gust=np.nan,
                       origin_hour_departures=base["origin_hour_departures"].min())
    p_storm, p_calm = float(np.mean(score(storm))), float(np.mean(score(calm)))
    return BehaviouralResult("minimum_functionality", p_storm > p_calm, f"storm {p_storm:.3f} vs calm {p_calm:.3f}")


def behavioural_suite(score: Scorer, sample: pd.DataFrame) -> list[BehaviouralResult]:
    return [
        invariance_to_flight_number(score, sample),
        heavy_precipitation_does_not_lower_delay(score, sample),
        obvious_cases(score, sample),
    ]
