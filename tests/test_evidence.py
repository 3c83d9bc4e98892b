"""DeLong intervals (ml/evidence.py): the AUC equals scikit-learn's, the variance agrees with a bootstrap
over flights, and the paired interval sees what two unpaired ones cannot."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ml.evidence import auc_interval, paired_auc_difference


def _flights(n: int, seed: int, signal: float = 1.0):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.2
    latent = rng.normal(size=n) + signal * y
    return y.astype(int), latent


def _bootstrap_sd(y, statistic, rounds=600, seed=0):
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(rounds):
        i = rng.integers(0, len(y), len(y))
        if 0 < y[i].sum() < len(i):
            values.append(statistic(i))
    return float(np.std(values))


def test_the_auc_is_scikit_learns_and_its_interval_matches_a_bootstrap_over_flights():
    y, p = _flights(3000, seed=1)
    interval = auc_interval(y, p, level=0.95)
    assert interval.estimate == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    sd = _bootstrap_sd(y, lambda i: roc_auc_score(y[i], p[i]))
    assert (interval.high - interval.low) / (2 * 1.959964) == pytest.approx(sd, rel=0.12)
    assert interval.low < interval.estimate < interval.high and interval.flights == 3000
    paired = paired_auc_difference(y, p, -p)
    for value in (*(getattr(interval, f) for f in ("estimate", "low", "high")),
                  *(getattr(paired, f) for f in ("estimate", "low", "high"))):
        assert type(value) is float, "plain floats: Dagster metadata and JSON refuse numpy scalars"


def test_ties_count_half_as_in_the_mann_whitney_statistic():
    y = np.array([0, 0, 1, 1, 0, 1])
    p = np.array([0.1, 0.5, 0.5, 0.9, 0.2, 0.5])
    assert auc_interval(y, p).estimate == pytest.approx(roc_auc_score(y, p))


def test_the_paired_interval_is_narrow_for_two_similar_models_and_matches_a_paired_bootstrap():
    y, latent = _flights(3000, seed=2)
    rng = np.random.default_rng(3)
    a = latent + rng.normal(scale=0.3, size=len(y))
    b = latent + rng.normal(scale=0.3, size=len(y))
    paired = paired_auc_difference(y, a, b)
    assert paired.estimate == pytest.approx(roc_auc_score(y, a) - roc_auc_score(y, b), abs=1e-12)
    sd = _bootstrap_sd(y, lambda i: roc_auc_score(y[i], a[i]) - roc_auc_score(y[i], b[i]))
    assert (paired.high - paired.low) / (2 * 1.959964) == pytest.approx(sd, rel=0.15)
    unpaired = auc_interval(y, a)
    assert paired.high - paired.low < (unpaired.high - unpaired.low) / 2, "pairing removes the shared noise"


def test_two_equally_good_models_are_told_apart_about_as_often_as_the_level_allows():
    """Coverage: over 60 draws of equally good models, a 95 % interval excludes 0 about 3 times."""
    excluded = 0
    for seed in range(60):
        y, latent = _flights(1500, seed=100 + seed)
        rng = np.random.default_rng(seed)
        a, b = (latent + rng.normal(scale=0.3, size=len(y)) for _ in range(2))
        excluded += paired_auc_difference(y, a, b).excludes(0.0)
    assert excluded <= 8


def test_a_clearly_better_model_is_told_apart_on_the_same_flights():
    y, latent = _flights(3000, seed=4)
    rng = np.random.default_rng(5)
    better, worse = latent + rng.normal(scale=0.2, size=len(y)), latent + rng.normal(scale=1.5, size=len(y))
    difference = paired_auc_difference(y, better, worse)
    assert difference.low > 0 and difference.excludes(0.0)
    assert paired_auc_difference(y, worse, better).high < 0


def test_too_few_flights_of_a_label_is_a_clear_error():
    with pytest.raises(ValueError, match="at least two flights of each label"):
        auc_interval(np.array([1, 0, 0, 0]), np.array([0.9, 0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="confidence level"):
        auc_interval(*_flights(100, seed=6), level=1.5)
