"""Feature drift between served traffic and the training data: Evidently's tests run with scipy (the fast engine).

Evidently picks one test per column from the reference size and the number of distinct values
(``_get_default_stattest`` in ``evidently.legacy.calculations.stattests.registry``): with more than
1,000 non-null reference values, the normed Wasserstein distance for numeric columns (Jensen-Shannon
for numeric columns with at most 5 distinct values) and the Jensen-Shannon distance for categorical
ones, both drifting at >= 0.1; with fewer, Kolmogorov-Smirnov for numeric columns, chi-square for
categorical ones (a Z-test for two values), drifting at p < 0.05. ``scipy_drift`` runs the same
choice with scipy alone: the "fast" engine of the drift_report asset, for backfills of many days,
where Evidently's import and report (~1.5 s a day) add up. The daily report runs Evidently itself
(``ml/drift_evidently.py``); tests/test_drift.py checks that both agree column by column.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ml.features import CATEGORICAL_FEATURES, FEATURE_COLUMNS, LABEL
from ml.gates import DRIFT_COLUMN_THRESHOLD, DRIFT_COLUMNS, DRIFT_MIN_ROWS, DRIFT_SHARE_THRESHOLD

VERSION = "3"
"""Bump when what this module computes changes: the assets built on it become stale (assets/versions.py)."""

_SMALL_REFERENCE = 1000


@dataclass
class DriftResult:
    """Per-column drift of current against reference.

    ``drift_share`` is over ``evaluated_columns`` only: a report that evaluated nothing (empty
    current frame) has a share of 0.0, so a gate should also look at ``evaluated_columns``.
    Scores are distances (drift when >= threshold) or p-values (drift when < threshold),
    depending on ``column_tests``.
    """

    drift_share: float
    drifted_columns: list[str]
    column_scores: dict[str, float]
    column_tests: dict[str, str]
    evaluated_columns: list[str]
    skipped_columns: dict[str, str]
    rows_current: int
    rows_reference: int


def reference_sample(features: pd.DataFrame, rows: int = 10_000, seed: int = 0) -> pd.DataFrame:
    """A deterministic sample of training features, stratified by month, for drift reports.

    Stratified by month rather than by origin × label: the features that drift most are the weather
    ones, which follow the season, so every month of the training window must weigh in the reference
    as much as it did in training; origin and label shares barely move between random samples of
    this size, and the label is not a drift feature. Months get rows in proportion to their traffic
    (largest remainders), rows keep their original order. Without a ``date`` column: a plain
    random sample.
    """
    columns = [*FEATURE_COLUMNS, *([LABEL] if LABEL in features.columns else [])]
    if rows >= len(features):
        return features[columns].reset_index(drop=True)
    if "date" not in features.columns:
        positions = np.sort(np.random.default_rng(seed).choice(len(features), size=rows, replace=False))
        return features.iloc[positions][columns].reset_index(drop=True)

    month = features["date"].astype(str).str[:7]
    sizes = month.value_counts().sort_index()
    exact = sizes / sizes.sum() * rows
    quota = np.floor(exact).astype(int)
    remainder = (exact - quota).sort_values(ascending=False, kind="stable")
    quota[remainder.index[: rows - int(quota.sum())]] += 1

    rng = np.random.default_rng(seed)
    picked = [
        rng.choice(np.flatnonzero((month == m).to_numpy()), size=int(n), replace=False)
        for m, n in quota.items()
        if n
    ]
    return features.iloc[np.sort(np.concatenate(picked))][columns].reset_index(drop=True)


def _is_categorical(name: str, column: pd.Series) -> bool:
    return name in CATEGORICAL_FEATURES or not (
        pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)
    )


def _as_numeric(column: pd.Series) -> pd.Series | None:
    """float64 with NaN for missing and ±inf (Evidently drops both); None if some text does not parse."""
    values = pd.to_numeric(column, errors="coerce").astype("float64")
    if (column.notna() & values.isna()).any():
        return None
    return values.replace([np.inf, -np.inf], np.nan)


def _as_category(column: pd.Series) -> pd.Series:
    return column.astype(object).where(column.notna(), np.nan)


def _comparable(name: str, current: pd.DataFrame, reference: pd.DataFrame):
    """``(current, reference, categorical)`` typed for the tests, or the reason the column cannot be compared."""
    for frame, side in ((current, "current"), (reference, "reference")):
        if name not in frame.columns:
            return f"absent from {side}"
        if frame.empty:
            return f"no rows in {side}"
    categorical = _is_categorical(name, reference[name])
    typed = []
    for frame, side in ((current, "current"), (reference, "reference")):
        column = _as_category(frame[name]) if categorical else _as_numeric(frame[name])
        if column is None:
            return f"non-numeric values in {side}"
        if column.isna().all():
            return f"all null in {side}"
        typed.append(column)
    return typed[0], typed[1], categorical


def prepare(current: pd.DataFrame, reference: pd.DataFrame, columns: Sequence[str]):
    """Typed copies of the columns that can be compared, their kinds, and why the others cannot.

    Evidently raises on an empty or all-null column (evidently #1480) and on a declared column that
    a frame lacks ("partially present in data"); those are skipped here with a reason instead.
    """
    cur, ref, categorical, numeric, skipped = {}, {}, [], [], {}
    for name in columns:
        typed = _comparable(name, current, reference)
        if isinstance(typed, str):
            skipped[name] = typed
            continue
        cur[name], ref[name], is_categorical = typed
        (categorical if is_categorical else numeric).append(name)
    return (
        pd.DataFrame({name: column.to_numpy() for name, column in cur.items()}),
        pd.DataFrame({name: column.to_numpy() for name, column in ref.items()}),
        categorical,
        numeric,
        skipped,
    )


def result_of(
    current: pd.DataFrame, reference: pd.DataFrame, evaluated: list[str], scores: dict, tests: dict,
    drifted: list[str], skipped: dict[str, str], drift_share: float | None = None,
) -> DriftResult:
    """A ``DriftResult``; ``drift_share`` defaults to drifted over evaluated (0.0 when nothing was evaluated)."""
    if drift_share is None:
        drift_share = len(drifted) / len(evaluated) if evaluated else 0.0
    return DriftResult(
        drift_share=drift_share,
        drifted_columns=drifted,
        column_scores=scores,
        column_tests=tests,
        evaluated_columns=evaluated,
        skipped_columns=skipped,
        rows_current=len(current),
        rows_reference=len(reference),
    )


def _binned(ref: pd.Series, cur: pd.Series, numeric: bool) -> tuple[np.ndarray, np.ndarray]:
    """Shares per bin as Evidently's ``get_binned_data`` makes them (Sturges bins above 20 values)."""
    if numeric and ref.nunique() > 20:
        bins = np.histogram_bin_edges(np.concatenate([ref.to_numpy(), cur.to_numpy()]), bins="sturges")
        return np.histogram(ref, bins)[0] / len(ref), np.histogram(cur, bins)[0] / len(cur)
    keys = pd.Index(pd.concat([ref, cur]).unique())
    ref_counts = ref.value_counts().reindex(keys, fill_value=0).to_numpy()
    cur_counts = cur.value_counts().reindex(keys, fill_value=0).to_numpy()
    return ref_counts / len(ref), cur_counts / len(cur)


def default_test(ref: pd.Series, cur: pd.Series, numeric: bool) -> str:
    """The test Evidently picks for a column from its non-null values (``_get_default_stattest``)."""
    distinct = pd.concat([ref, cur]).nunique()
    if len(ref) > _SMALL_REFERENCE:
        return "wasserstein" if numeric and distinct > 5 else "jensenshannon"
    if numeric and distinct > 5:
        return "ks"
    return "chisquare" if distinct > 2 else "z"


def _chisquare(ref: pd.Series, cur: pd.Series) -> float:
    from scipy import stats

    keys = pd.Index(pd.concat([ref, cur]).unique())
    observed = cur.value_counts().reindex(keys, fill_value=0).to_numpy()
    expected = ref.value_counts().reindex(keys, fill_value=0).to_numpy() * len(cur) / len(ref)
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.chisquare(observed, expected).pvalue)


def _z_test(ref: pd.Series, cur: pd.Series) -> float:
    from scipy import stats

    if ref.nunique() == 1 and cur.nunique() == 1 and ref.iloc[0] == cur.iloc[0]:
        return 1.0
    first = sorted(pd.concat([ref, cur]).unique())[0]
    p1, p2 = float((ref != first).mean()), float((cur != first).mean())
    pooled = (p1 * len(ref) + p2 * len(cur)) / (len(ref) + len(cur))
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1 / len(ref) + 1 / len(cur)))
    return float(2 * (1 - stats.norm.cdf(abs(z))))


def _scipy_test(ref: pd.Series, cur: pd.Series, numeric: bool, threshold: float | None) -> tuple[str, float, bool]:
    from scipy import stats
    from scipy.spatial import distance

    test = default_test(ref, cur, numeric)
    if test == "wasserstein":
        score = float(stats.wasserstein_distance(ref, cur) / max(float(np.std(ref)), 0.001))
    elif test == "jensenshannon":
        score = float(distance.jensenshannon(*_binned(ref, cur, numeric)))
    elif test == "ks":
        score = float(stats.ks_2samp(ref, cur).pvalue)
    else:
        score = _chisquare(ref, cur) if test == "chisquare" else _z_test(ref, cur)
    if test in {"wasserstein", "jensenshannon"}:
        return test, score, score >= (0.1 if threshold is None else threshold)
    alpha = 0.05 if threshold is None else threshold
    return test, score, (score <= alpha if test == "ks" else score < alpha)


def scipy_drift(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    columns: Sequence[str] = FEATURE_COLUMNS,
    threshold: float | None = None,
) -> DriftResult:
    """The tests Evidently would pick for each column, run with scipy alone: the fast engine.

    Same columns, skips, test choice, binning and thresholds as ``ml.drift_evidently.evidently_report``,
    so the two agree column by column (tests/test_drift.py checks it). ``threshold`` applies to every
    column's test; None keeps Evidently's default per test (0.1 for the distances, 0.05 for the
    p-values). Columns that cannot be compared (absent, empty, all null) are listed in
    ``skipped_columns``; columns of ``current`` not in ``columns`` (request ids, scores) are ignored.
    """
    cur, ref, _, numeric, skipped = prepare(current, reference, columns)
    scores, tests, drifted = {}, {}, []
    for name in cur.columns:
        tests[name], scores[name], is_drift = _scipy_test(ref[name].dropna(), cur[name].dropna(), name in numeric, threshold)
        if is_drift:
            drifted.append(name)
    return result_of(current, reference, list(cur.columns), scores, tests, drifted, skipped)


@dataclass(frozen=True)
class GateSpec:
    """What the daily drift check gates on; ``ml/gates.py`` holds the calibrated figures and why.

    A day fails when the share of ``columns`` whose normed Wasserstein distance is at or above
    ``column_threshold`` is at or above ``share_threshold``, and it has at least ``min_rows`` rows.
    """

    columns: tuple[str, ...] = DRIFT_COLUMNS
    column_threshold: float = DRIFT_COLUMN_THRESHOLD
    share_threshold: float = DRIFT_SHARE_THRESHOLD
    min_rows: int = DRIFT_MIN_ROWS


@dataclass
class DriftGate:
    """The gate's verdict on one day; ``share`` None when no gate column was comparable (not "no drift")."""

    share: float | None
    drifted: list[str]
    scores: dict[str, float]
    failed: bool = False


def gate_columns(current: pd.DataFrame, reference: pd.DataFrame, spec: GateSpec) -> list[str]:
    """The gate columns comparable on the distance scale: Evidently scores them with normed Wasserstein.

    A small reference switches Evidently to p-values, which are not on the gate's scale: such a
    column, and one that cannot be compared at all, is left out of the gate.
    """
    cur, ref, _, numeric, _ = prepare(current, reference, spec.columns)
    return [c for c in cur.columns if default_test(ref[c].dropna(), cur[c].dropna(), c in numeric) == "wasserstein"]


def gate(result: DriftResult, spec: GateSpec = GateSpec()) -> DriftGate:
    """Apply the gate to a report's per-column scores (distances only: p-value tests are not on this scale)."""
    scores = {
        c: result.column_scores[c]
        for c in spec.columns
        if c in result.column_scores and result.column_tests.get(c) == "wasserstein"
    }
    if not scores:
        return DriftGate(None, [], {})
    drifted = [c for c, score in scores.items() if score >= spec.column_threshold]
    share = len(drifted) / len(scores)
    return DriftGate(share, drifted, scores, failed=share >= spec.share_threshold)
