"""Cost of a drift report: ours (scipy + HTML page), Evidently's DataDriftPreset, and the bare scipy tests.

    .venv/bin/python bench/drift_bench.py            # ~90 s on 2 cores

Reference: a 10,000-row month-stratified sample of Jan–Jun 2013 features (the training window).
Current: one day of July traffic, then the whole month. For each, on the 23 feature columns:
wall time of ``drift_report`` (what the asset runs: scipy's tests and an HTML page), ``evidently_drift``
(Evidently, HTML included) and ``scipy_drift`` (best of a few runs, after a warm-up), the ratios to
scipy, and peak memory as tracemalloc's peak of Python-tracked allocations (numpy and pandas
buffers included) during one call, measured in a separate run because tracing
slows the call down. Prints figures; asserts nothing.
"""

from __future__ import annotations

import resource
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TRAINING_MONTHS = ("1", "2", "3", "4", "5", "6")
CURRENT_MONTH = "7"
CURRENT_DAY = "2013-07-15"


def _features(months):
    from ml.contracts import AIRPORTS, FLIGHTS, PLANES, WEATHER
    from ml.features import build_features
    from ml.parsing import parse_frame
    from ml.reference_data import read_table

    def typed(table, contract):
        raw = read_table(table)
        rows = raw[raw.month.isin(months)] if "month" in raw else raw
        return parse_frame(rows.reset_index(drop=True), contract, table).frame

    return build_features(typed("flights", FLIGHTS), typed("weather", WEATHER), typed("planes", PLANES), typed("airports", AIRPORTS))


def _best_seconds(run, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def _peak_mb(run) -> float:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


def main() -> int:
    started = time.perf_counter()
    from ml.drift import drift_report, evidently_drift, reference_sample, scipy_drift
    from ml.features import FEATURE_COLUMNS

    print(f"import ml.drift (pandas, numpy): {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    import scipy.stats  # noqa: F401

    print(f"import scipy.stats: {time.perf_counter() - started:.1f} s (paid once per process by drift_report)")
    started = time.perf_counter()
    import evidently.presets  # noqa: F401

    print(f"import evidently: {time.perf_counter() - started:.1f} s (paid once per process by evidently_drift)")

    started = time.perf_counter()
    reference = reference_sample(_features(TRAINING_MONTHS))
    july = _features((CURRENT_MONTH,))
    print(f"features Jan–Jul built in {time.perf_counter() - started:.1f} s; reference {len(reference):,} rows, "
          f"{len(FEATURE_COLUMNS)} feature columns")

    day = july[july.date == CURRENT_DAY]
    for run in (drift_report, evidently_drift, scipy_drift):  # warm-up: first-call caches
        run(day, reference)
    print("\ndrift_report = scipy's tests + our HTML page (what the asset runs); evidently = evidently_drift (HTML included)")
    print(f"{'current':>22} {'rows':>7} {'report s':>9} {'evidently s':>12} {'scipy s':>8} {'report÷scipy':>13} "
          f"{'evidently÷scipy':>16} {'report MB':>10} {'evidently MB':>13} {'html KB':>8} {'ev. html KB':>12} {'drift share':>12}")
    for label, current, repeats in (
        (f"one day ({CURRENT_DAY})", day, 3),
        ("a month (July)", july, 2),
    ):
        report_s = _best_seconds(lambda: drift_report(current, reference), 5)
        evidently_s = _best_seconds(lambda: evidently_drift(current, reference), repeats)
        scipy_s = _best_seconds(lambda: scipy_drift(current, reference), 5)
        report = drift_report(current, reference)
        evidently = evidently_drift(current, reference)
        agree = "agree" if evidently.drifted_columns == report.drifted_columns else "DISAGREE"
        report_mb = _peak_mb(lambda: drift_report(current, reference))
        evidently_mb = _peak_mb(lambda: evidently_drift(current, reference))
        print(f"{label:>22} {len(current):>7,} {report_s:>9.3f} {evidently_s:>12.2f} {scipy_s:>8.3f} "
              f"{report_s / scipy_s:>13.2f} {evidently_s / scipy_s:>16.0f} {report_mb:>10.1f} {evidently_mb:>13.0f} "
              f"{len(report.html) / 1e3:>8.0f} {len(evidently.html) / 1e3:>12.0f} {report.drift_share:>6.2f} ({agree})")
    print(f"\npeak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
