"""Evidently's own drift report of a day: its page, its JSON, and the figures the drift gate reads from it.

One ``Report`` holds Evidently's ``DataDriftPreset`` over every feature (its default test and
threshold per column) and the gate as Evidently metrics: a ``DriftedColumnsCount`` over the gate
columns at the gate's normed Wasserstein threshold, whose share test fails at the gate's share,
and one ``ValueDrift`` per gate column at that threshold. So the page a person opens shows the
verdict the check acted on, and the check's numbers are the ones in the saved JSON.
Evidently is imported inside the functions: its import costs ~4 s (bench/drift_bench.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

import pandas as pd

from ml.drift import DriftGate, DriftResult, GateSpec, gate_columns, prepare, result_of
from ml.features import FEATURE_COLUMNS

VERSION = "1"
"""Bump when what this module computes changes: the assets built on it become stale (assets/versions.py)."""


@dataclass
class EvidentlyDrift:
    """Evidently's report of a day: the preset's figures, the gate's figures, its HTML page and its JSON."""

    result: DriftResult
    gate: DriftGate
    html: str = field(repr=False)
    json: str = field(repr=False)


def _stattest_names() -> dict[str, str]:
    """Evidently 0.7 reports a test by its display name ("Wasserstein distance (normed)"); map to "wasserstein"."""
    from evidently.legacy.calculations import stattests
    from evidently.legacy.calculations.stattests.registry import StatTest

    return {t.display_name: t.name for t in vars(stattests).values() if isinstance(t, StatTest)}


def _gate_metrics(columns: list[str], spec: GateSpec) -> tuple[object, dict[str, object]]:
    """The gate as Evidently metrics: the share of drifted gate columns (with its test) and each column's drift."""
    from evidently.metrics import DriftedColumnsCount, ValueDrift

    share = DriftedColumnsCount(
        columns=columns, method="wasserstein", threshold=spec.column_threshold, drift_share=spec.share_threshold
    )
    per_column = {c: ValueDrift(column=c, method="wasserstein", threshold=spec.column_threshold) for c in columns}
    return share, per_column


def _no_report_html(skipped: dict[str, str], rows_current: int) -> str:
    items = "".join(f"<li>{escape(c)}: {escape(r)}</li>" for c, r in skipped.items())
    return (
        "<!DOCTYPE html><html><body><h1>No drift report</h1>"
        f"<p>No column could be compared ({rows_current} current rows).</p><ul>{items}</ul></body></html>"
    )


def _page(snapshot) -> str:
    """The page ``snapshot.save_html(path)`` writes (0.7.23's ``save_html`` ignores a file object: no temp file)."""
    return snapshot.get_html_str(as_iframe=False)


def _failed(summary: dict) -> set[str]:
    """Ids of the metrics with a failed test."""
    return {t["metric_config"]["metric_id"] for t in summary["tests"] if t["status"] == "FAIL"}


def _preset_figures(summary: dict, gate_ids: set[str], evaluated: list[str]):
    """``(scores, tests, drifted, drift_share)`` of the preset's metrics (every metric not the gate's)."""
    names, failed = _stattest_names(), _failed(summary)
    scores, tests, drifted, share = {}, {}, [], None
    for metric in (m for m in summary["metrics"] if m["id"] not in gate_ids):
        config = metric["config"]
        if config["type"].endswith(":ValueDrift"):
            scores[config["column"]] = float(metric["value"])
            tests[config["column"]] = names.get(config["method"], config["method"])
            if metric["id"] in failed:
                drifted.append(config["column"])
        elif config["type"].endswith(":DriftedColumnsCount"):
            share = float(metric["value"]["share"])
    if set(scores) != set(evaluated) or share is None:
        raise RuntimeError(
            f"Evidently's snapshot lacks drift results for {sorted(set(evaluated) - set(scores)) or 'the dataset'}: "
            "has its snapshot.dict() layout changed? (read for evidently 0.7: metrics[].id/config/value, tests[].status)"
        )
    return scores, tests, [c for c in evaluated if c in drifted], share


def _gate_figures(summary: dict, share_metric, per_column: dict) -> DriftGate:
    """The gate's verdict as Evidently computed it: share and test of the count metric, each column's score."""
    values, failed = {m["id"]: m["value"] for m in summary["metrics"]}, _failed(summary)
    ids = {c: metric.get_fingerprint() for c, metric in per_column.items()}
    share_id = share_metric.get_fingerprint()
    return DriftGate(
        share=float(values[share_id]["share"]),
        drifted=[c for c, i in ids.items() if i in failed],
        scores={c: float(values[i]) for c, i in ids.items()},
        failed=share_id in failed,
    )


def evidently_report(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    columns: Sequence[str] = FEATURE_COLUMNS,
    threshold: float | None = None,
    spec: GateSpec = GateSpec(),
) -> EvidentlyDrift:
    """Evidently's DataDriftPreset over ``columns`` plus the drift gate, run once; figures, page and JSON.

    ``threshold`` applies to every preset column; None keeps Evidently's default per test (0.1 for
    the distances, 0.05 for the p-values); the gate always uses ``spec``. Columns that cannot be
    compared (absent, empty, all null: Evidently crashes on those, evidently #1480) are listed in
    ``skipped_columns``; columns of ``current`` not in ``columns`` (request ids, scores) are ignored.
    Carrier, origin and dest are declared categorical, every other numeric-typed column numeric.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    cur, ref, categorical, numeric, skipped = prepare(current, reference, columns)
    evaluated = list(cur.columns)
    if not evaluated:
        result = result_of(current, reference, [], {}, {}, [], skipped)
        return EvidentlyDrift(result, DriftGate(None, [], {}), _no_report_html(skipped, len(current)), "{}")

    gated = gate_columns(current, reference, spec)
    share_metric, per_column = _gate_metrics(gated, spec)
    extra = [share_metric, *per_column.values()] if gated else []
    definition = DataDefinition(categorical_columns=categorical, numerical_columns=numeric)
    snapshot = Report([DataDriftPreset(columns=evaluated, threshold=threshold), *extra], include_tests=True).run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
    )
    summary = snapshot.dict()
    gate_ids = {m.get_fingerprint() for m in extra}
    scores, tests, drifted, share = _preset_figures(summary, gate_ids, evaluated)
    result = result_of(current, reference, evaluated, scores, tests, drifted, skipped, drift_share=share)
    verdict = _gate_figures(summary, share_metric, per_column) if gated else DriftGate(None, [], {})
    return EvidentlyDrift(result, verdict, _page(snapshot), snapshot.json())
