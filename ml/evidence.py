"""How sure a ROC AUC is: DeLong's confidence intervals, for one model and for two models on the same flights.

The retraining trigger and the promotion gate decide on these intervals, not on point estimates: one
day's ROC AUC on ~900 flights swings by ±0.1, and two models trained a day apart differ by less than
that noise. DeLong's variance is exact for the Mann–Whitney AUC and needs no resampling; the paired form
uses the covariance of the two models' scores on the same flights (DeLong, DeLong & Clarke-Pearson 1988;
the fast midrank algorithm of Sun & Xu 2014).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

VERSION = "1"
"""Bump when an interval's computation changes (tests/test_module_versions.py)."""


@dataclass(frozen=True)
class Interval:
    """An estimate and its two-sided confidence interval at ``level``."""

    estimate: float
    low: float
    high: float
    level: float
    flights: int

    def excludes(self, value: float) -> bool:
        return value < self.low or value > self.high

    def describe(self, digits: int = 4) -> str:
        return (f"{self.estimate:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}] "
                f"({self.level:.0%} CI, {self.flights:,} flights)")

    def as_record(self) -> dict[str, float]:
        return {"estimate": round(self.estimate, 6), "low": round(self.low, 6), "high": round(self.high, 6),
                "level": self.level, "flights": self.flights}


def auc_interval(y: np.ndarray, p: np.ndarray, level: float = 0.95) -> Interval:
    """ROC AUC of scores ``p`` for labels ``y`` (0/1) with DeLong's interval, clipped to [0, 1]."""
    aucs, covariance, flights = _delong(np.asarray(y), np.asarray(p, dtype="float64")[None, :])
    auc = float(aucs[0])
    half = z_score(level) * float(np.sqrt(max(covariance[0, 0], 0.0)))
    return Interval(auc, max(0.0, auc - half), min(1.0, auc + half), level, flights)


def paired_auc_difference(y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray, level: float = 0.95) -> Interval:
    """AUC(a) − AUC(b) on the same flights, with the paired DeLong interval."""
    scores = np.vstack([np.asarray(p_a, dtype="float64"), np.asarray(p_b, dtype="float64")])
    aucs, covariance, flights = _delong(np.asarray(y), scores)
    variance = float(covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1])
    difference = float(aucs[0] - aucs[1])
    half = z_score(level) * float(np.sqrt(max(variance, 0.0)))
    return Interval(difference, difference - half, difference + half, level, flights)


def _delong(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """The AUCs of each row of ``scores`` and their DeLong covariance matrix."""
    from scipy.stats import rankdata

    positive = y.astype(bool)
    m, n = int(positive.sum()), int((~positive).sum())
    if m < 2 or n < 2:
        raise ValueError(f"an AUC interval needs at least two flights of each label; got {m} late and {n} on time")
    ordered = np.hstack([scores[:, positive], scores[:, ~positive]])
    all_ranks = rankdata(ordered, axis=1)
    positive_ranks = rankdata(ordered[:, :m], axis=1)
    negative_ranks = rankdata(ordered[:, m:], axis=1)
    aucs = all_ranks[:, :m].sum(axis=1) / m / n - (m + 1.0) / (2.0 * n)
    v_positive = (all_ranks[:, :m] - positive_ranks) / n
    v_negative = 1.0 - (all_ranks[:, m:] - negative_ranks) / m
    covariance = np.atleast_2d(np.cov(v_positive)) / m + np.atleast_2d(np.cov(v_negative)) / n
    return aucs, covariance, m + n


def z_score(level: float) -> float:
    """The standard normal quantile of a two-sided ``level`` interval (1.96 for 0.95)."""
    from scipy.stats import norm

    if not 0 < level < 1:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
    return float(norm.ppf(0.5 + level / 2))
