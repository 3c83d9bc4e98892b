"""One day of drift as the drift_report asset records it, by one of two engines, and the check over a run's days.

Engines: ``"evidently"`` (the default) runs Evidently's own report (``ml/drift_evidently.py``) and
keeps its HTML page and JSON; ``"fast"`` runs the same tests with scipy (``ml/drift.py``) in a few
milliseconds a day and keeps a JSON of its figures only. The fast engine is for backfills of many
days, where Evidently's import (~4 s a process) and report (~1.5 s a day) add up; both give the
same scores and verdicts (tests/test_drift.py).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Literal

import pandas as pd

from ml.drift import DriftGate, DriftResult, GateSpec, gate, scipy_drift

VERSION = "1"
"""Bump when what this module computes changes: the assets built on it become stale (assets/versions.py)."""

Engine = Literal["evidently", "fast"]
REPORT_HTML = "report.html"
REPORT_JSON = "report.json"


@dataclass
class DayDrift:
    """A day's figures, the gate's verdict, and the report files (name → bytes) the engine made."""

    engine: str
    result: DriftResult
    gate: DriftGate
    files: dict[str, bytes] = field(repr=False)

    def counted(self, spec: GateSpec) -> bool:
        """Whether the day can fail the check: a gate column was comparable and the day had enough rows."""
        return self.gate.share is not None and self.result.rows_current >= spec.min_rows

    def report_name(self) -> str:
        """The file a person opens: Evidently's page, or the fast engine's JSON."""
        return REPORT_HTML if REPORT_HTML in self.files else REPORT_JSON


def day_drift(current: pd.DataFrame, reference: pd.DataFrame, spec: GateSpec = GateSpec(),
              engine: Engine = "evidently") -> DayDrift:
    """Drift of ``current`` against ``reference`` over every feature, and the gate, by ``engine``."""
    if engine == "evidently":
        from ml.drift_evidently import evidently_report

        report = evidently_report(current, reference, spec=spec)
        files = {REPORT_HTML: report.html.encode(), REPORT_JSON: report.json.encode()}
        return DayDrift(engine, report.result, report.gate, files)
    if engine == "fast":
        result = scipy_drift(current, reference)
        verdict = gate(result, spec)
        figures = {"engine": engine, "result": asdict(result), "gate": asdict(verdict)}
        return DayDrift(engine, result, verdict, {REPORT_JSON: json.dumps(figures, indent=1).encode()})
    raise ValueError(f"drift engine {engine!r}: expected 'evidently' (the default) or 'fast' (large backfills)")


def day_metadata(drift: DayDrift) -> dict:
    """The day's figures as materialization metadata (plain values; the asset adds source and links)."""
    result, verdict = drift.result, drift.gate
    return {
        "drift_share": verdict.share if verdict.share is not None else "not evaluated",
        "drifted_gate_columns": verdict.drifted,
        "gate_failed": verdict.failed,
        "evidently_drift_share": result.drift_share,
        "evidently_drifted_columns": result.drifted_columns,
        "skipped_columns": result.skipped_columns,
        "rows_current": result.rows_current,
        "drift_engine": drift.engine,
        **{f"score_{c}": score for c, score in result.column_scores.items()},
    }


def day_table(drift: DayDrift, day: str, source: str, reference_version: str) -> pd.DataFrame:
    """The day's stored partition: one row per compared column with its test, score and verdicts."""
    result, verdict = drift.result, drift.gate
    columns = list(result.column_scores)
    return pd.DataFrame(
        {
            "date": day,
            "column": columns,
            "score": [result.column_scores[c] for c in columns],
            "test": [result.column_tests[c] for c in columns],
            "drifted": [c in result.drifted_columns for c in columns],
            "gate_column": [c in verdict.scores for c in columns],
            "gate_drift_share": verdict.share,
            "source": source,
            "reference_version": reference_version,
        }
    )


@dataclass
class DriftCheck:
    """The drift check over a run's days: it fails when any counted day failed the gate."""

    passed: bool
    drifted_days: dict[str, float]
    worst: float
    description: str


def drift_check(days: dict[str, DayDrift], spec: GateSpec) -> DriftCheck:
    """Fold the days' gate verdicts into the check; days without a gate share or with too few rows never fail it."""
    counted = {day: d.gate for day, d in days.items() if d.counted(spec)}
    drifted = {day: round(g.share, 4) for day, g in counted.items() if g.failed}
    worst = max((g.share for g in counted.values()), default=0.0)
    columns = list(spec.columns)
    description = (
        f"drifted days (share of {columns} >= {spec.share_threshold}): {drifted}"
        if drifted
        else f"no day at drift share {spec.share_threshold} of {columns} (worst {worst:.3f})"
    )
    return DriftCheck(not drifted, drifted, worst, description)
