"""Feature drift between served traffic and the training data: Evidently's tests, run with scipy, and a report page.

Evidently picks one test per column from the reference size and the number of distinct values
(``_get_default_stattest`` in ``evidently.legacy.calculations.stattests.registry``): with more than
1,000 non-null reference values, the normed Wasserstein distance for numeric columns (Jensen-Shannon
for numeric columns with at most 5 distinct values) and the Jensen-Shannon distance for categorical
ones, both drifting at >= 0.1; with fewer, Kolmogorov-Smirnov for numeric columns, chi-square for
categorical ones (a Z-test for two values), drifting at p < 0.05. ``scipy_drift`` runs the same
choice with scipy alone, as a cross-check and to price what Evidently's report costs on top.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

import numpy as np
import pandas as pd

from ml.drift_html import distribution, render
from ml.features import CATEGORICAL_FEATURES, FEATURE_COLUMNS, LABEL
from ml.gates import DRIFT_COLUMN_THRESHOLD, DRIFT_COLUMNS

VERSION = "2"
"""Bump when what this module computes changes: the assets built on it become stale (assets/versions.py)."""

_SMALL_REFERENCE = 1000


@dataclass
class DriftResult:
    """Per-column drift of current against reference, and an HTML report (empty from ``scipy_drift``).

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
    html: str = field(default="", repr=False)


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


def _prepare(current: pd.DataFrame, reference: pd.DataFrame, columns: Sequence[str]):
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


def _result(
    current: pd.DataFrame, reference: pd.DataFrame, evaluated: list[str], scores: dict, tests: dict,
    drifted: list[str], skipped: dict[str, str], html: str,
) -> DriftResult:
    return DriftResult(
        drift_share=len(drifted) / len(evaluated) if evaluated else 0.0,
        drifted_columns=drifted,
        column_scores=scores,
        column_tests=tests,
        evaluated_columns=evaluated,
        skipped_columns=skipped,
        rows_current=len(current),
        rows_reference=len(reference),
        html=html,
    )


def _stattest_names() -> dict[str, str]:
    """Evidently 0.7 reports a test by its display name ("Wasserstein distance (normed)"); map to "wasserstein"."""
    from evidently.legacy.calculations import stattests
    from evidently.legacy.calculations.stattests.registry import StatTest

    return {t.display_name: t.name for t in vars(stattests).values() if isinstance(t, StatTest)}


def _skipped_html(skipped: dict[str, str], rows_current: int) -> str:
    items = "".join(f"<li>{escape(c)}: {escape(r)}</li>" for c, r in skipped.items())
    return (
        "<!DOCTYPE html><html><body><h1>No drift report</h1>"
        f"<p>No column could be compared ({rows_current} current rows).</p><ul>{items}</ul></body></html>"
    )


def evidently_drift(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    columns: Sequence[str] = FEATURE_COLUMNS,
    threshold: float | None = None,
) -> DriftResult:
    """Evidently's DataDriftPreset over ``columns``, with per-column scores pulled out of the snapshot, and its HTML.

    The reference implementation ``scipy_drift`` is checked against; ~40× its cost (bench/drift_bench.py).
    ``threshold`` applies to every column's test; None keeps Evidently's default per test (0.1 for
    the distances, 0.05 for the p-values). Columns that cannot be compared (absent, empty, all null)
    are listed in ``skipped_columns`` rather than crashing the report; columns of ``current`` not
    in ``columns`` (request ids, scores) are ignored. Carrier, origin and dest are declared
    categorical, every other numeric-typed column numeric.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    cur, ref, categorical, numeric, skipped = _prepare(current, reference, columns)
    evaluated = list(cur.columns)
    if not evaluated:
        return _result(current, reference, [], {}, {}, [], skipped, _skipped_html(skipped, len(current)))

    definition = DataDefinition(categorical_columns=categorical, numerical_columns=numeric)
    report = Report([DataDriftPreset(columns=evaluated, threshold=threshold)], include_tests=True)
    snapshot = report.run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
    )
    summary = snapshot.dict()
    names = _stattest_names()
    scores, tests = {}, {}
    for metric in summary["metrics"]:
        config = metric["config"]
        if config["type"].endswith(":ValueDrift"):
            scores[config["column"]] = float(metric["value"])
            tests[config["column"]] = names.get(config["method"], config["method"])
    status = {
        test["metric_config"]["params"]["column"]: test["status"]
        for test in summary["tests"]
        if test["id"] == "drift"
    }
    if set(scores) != set(evaluated) or set(status) != set(evaluated):
        raise RuntimeError(
            f"Evidently's snapshot lacks ValueDrift results for {sorted(set(evaluated) - (set(scores) & set(status)))}: "
            "has its snapshot.dict() layout changed? (read for evidently 0.7: metrics[].config, tests[].status)"
        )
    drifted = [c for c in evaluated if status[c] == "FAIL"]
    return _result(current, reference, evaluated, scores, tests, drifted, skipped, snapshot.get_html_str(as_iframe=False))


def _binned(ref: pd.Series, cur: pd.Series, numeric: bool) -> tuple[np.ndarray, np.ndarray]:
    """Shares per bin as Evidently's ``get_binned_data`` makes them (Sturges bins above 20 values)."""
    if numeric and ref.nunique() > 20:
        bins = np.histogram_bin_edges(np.concatenate([ref.to_numpy(), cur.to_numpy()]), bins="sturges")
        return np.histogram(ref, bins)[0] / len(ref), np.histogram(cur, bins)[0] / len(cur)
    keys = pd.Index(pd.concat([ref, cur]).unique())
    ref_counts = ref.value_counts().reindex(keys, fill_value=0).to_numpy()
    cur_counts = cur.value_counts().reindex(keys, fill_value=0).to_numpy()
    return ref_counts / len(ref), cur_counts / len(cur)


def _scipy_test(ref: pd.Series, cur: pd.Series, numeric: bool, threshold: float | None) -> tuple[str, float, bool]:
    from scipy import stats
    from scipy.spatial import distance

    distinct = pd.concat([ref, cur]).nunique()
    if len(ref) > _SMALL_REFERENCE:
        if numeric and distinct > 5:
            score = stats.wasserstein_distance(ref, cur) / max(float(np.std(ref)), 0.001)
            return "wasserstein", float(score), score >= (0.1 if threshold is None else threshold)
        score = float(distance.jensenshannon(*_binned(ref, cur, numeric)))
        return "jensenshannon", score, score >= (0.1 if threshold is None else threshold)
    alpha = 0.05 if threshold is None else threshold
    if numeric and distinct > 5:
        p = float(stats.ks_2samp(ref, cur).pvalue)
        return "ks", p, p <= alpha
    if distinct > 2:
        keys = pd.Index(pd.concat([ref, cur]).unique())
        observed = cur.value_counts().reindex(keys, fill_value=0).to_numpy()
        expected = ref.value_counts().reindex(keys, fill_value=0).to_numpy() * len(cur) / len(ref)
        with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            p = float(stats.chisquare(observed, expected).pvalue)
        return "chisquare", p, p < alpha
    if ref.nunique() == 1 and cur.nunique() == 1 and ref.iloc[0] == cur.iloc[0]:
        return "z", 1.0, False
    first = sorted(pd.concat([ref, cur]).unique())[0]
    p1, p2 = float((ref != first).mean()), float((cur != first).mean())
    pooled = (p1 * len(ref) + p2 * len(cur)) / (len(ref) + len(cur))
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1 / len(ref) + 1 / len(cur)))
    p = float(2 * (1 - stats.norm.cdf(abs(z))))
    return "z", p, p < alpha


def _scipy_columns(current, reference, columns, threshold, with_html: bool) -> DriftResult:
    cur, ref, categorical, numeric, skipped = _prepare(current, reference, columns)
    if with_html and not len(cur.columns):
        return _result(current, reference, [], {}, {}, [], skipped, _skipped_html(skipped, len(current)))
    scores, tests, drifted, thresholds, distributions = {}, {}, [], {}, {}
    for name in cur.columns:
        ref_values, cur_values = ref[name].dropna(), cur[name].dropna()
        test, score, is_drift = _scipy_test(ref_values, cur_values, name in numeric, threshold)
        scores[name], tests[name] = score, test
        if is_drift:
            drifted.append(name)
        if with_html:
            p_value = test in {"ks", "chisquare", "z"}
            thresholds[name] = threshold if threshold is not None else (0.05 if p_value else 0.1)
            distributions[name] = distribution(ref_values, cur_values, name in numeric)
    html = ""
    if with_html:
        html = render(scores=scores, tests=tests, drifted=drifted, thresholds=thresholds, skipped=skipped,
                      distributions=distributions, rows_current=len(current), rows_reference=len(reference))
    return _result(current, reference, list(cur.columns), scores, tests, drifted, skipped, html)


def scipy_drift(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    columns: Sequence[str] = FEATURE_COLUMNS,
    threshold: float | None = None,
) -> DriftResult:
    """The tests Evidently would pick for each column, run with scipy alone; ``html`` is empty.

    Same columns, skips, test choice, binning and thresholds as ``evidently_drift``, so the two
    agree column by column (tests/test_drift.py checks it).
    """
    return _scipy_columns(current, reference, columns, threshold, with_html=False)


def drift_report(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    columns: Sequence[str] = FEATURE_COLUMNS,
    threshold: float | None = None,
) -> DriftResult:
    """``scipy_drift``'s figures and a self-contained HTML page of them (``ml/drift_html.py``).

    ``threshold`` applies to every column's test; None keeps Evidently's default per test (0.1 for
    the distances, 0.05 for the p-values). Columns that cannot be compared (absent, empty, all null)
    are listed in ``skipped_columns``; columns of ``current`` not in ``columns`` (request ids,
    scores) are ignored. Carrier, origin and dest are categorical, every other numeric-typed column numeric.
    """
    return _scipy_columns(current, reference, columns, threshold, with_html=True)


GATE_COLUMNS = DRIFT_COLUMNS
GATE_THRESHOLD = DRIFT_COLUMN_THRESHOLD
"""What the daily drift check gates on: ``ml/gates.py`` holds the figures and why."""


@dataclass
class DriftGate:
    """The gate's verdict: share of ``columns`` at or beyond ``threshold``; None when none was comparable."""

    share: float | None
    drifted: list[str]
    scores: dict[str, float]


def gate(result: DriftResult, columns: Sequence[str] = GATE_COLUMNS, threshold: float = GATE_THRESHOLD) -> DriftGate:
    """Apply the gate to a report's per-column scores (distances only: p-value tests are not on this scale).

    A day without weather compares no gate column: share None, which must not read as "no drift".
    """
    scores = {
        c: result.column_scores[c]
        for c in columns
        if c in result.column_scores and result.column_tests.get(c) == "wasserstein"
    }
    if not scores:
        return DriftGate(None, [], {})
    drifted = [c for c, score in scores.items() if score >= threshold]
    return DriftGate(len(drifted) / len(scores), drifted, scores)
