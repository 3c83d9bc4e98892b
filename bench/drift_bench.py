"""Cost of a drift report: Evidently's DataDriftPreset vs the same per-column tests in scipy.

    .venv/bin/python bench/drift_bench.py            # ~90 s on 2 cores

Reference: a 10,000-row month-stratified sample of Jan–Jun 2013 features (the training window).
Current: one day of July traffic, then the whole month. For each, on the 23 feature columns:
wall time of ``drift_report`` (Evidently, HTML included) and ``scipy_drift`` (best of a few runs,
after a warm-up), their ratio, and peak memory as tracemalloc's peak of Python-tracked allocations
(numpy and pandas buffers included) during one call, measured in a separate run because tracing
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
    from ml.drift import drift_report, reference_sample, scipy_drift
    from ml.features import FEATURE_COLUMNS

    started = time.perf_counter()
    import evidently.presets  # noqa: F401

    print(f"import evidently: {time.perf_counter() - started:.1f} s (paid once per process)")

    started = time.perf_counter()
    reference = reference_sample(_features(TRAINING_MONTHS))
    july = _features((CURRENT_MONTH,))
    print(f"features Jan–Jul built in {time.perf_counter() - started:.1f} s; reference {len(reference):,} rows, "
          f"{len(FEATURE_COLUMNS)} feature columns")

    drift_report(july[july.date == CURRENT_DAY], reference)  # warm-up: first-call caches
    print(f"\n{'current':>22} {'rows':>7} {'evidently s':>12} {'scipy s':>8} {'ratio':>6} "
          f"{'evidently MB':>13} {'scipy MB':>9} {'html MB':>8} {'drift share':>12}")
    for label, current, repeats in (
        (f"one day ({CURRENT_DAY})", july[july.date == CURRENT_DAY], 3),
        ("a month (July)", july, 2),
    ):
        evidently_s = _best_seconds(lambda: drift_report(current, reference), repeats)
        scipy_s = _best_seconds(lambda: scipy_drift(current, reference), 5)
        report = drift_report(current, reference)
        check = scipy_drift(current, reference)
        agree = "agree" if check.drifted_columns == report.drifted_columns else "DISAGREE"
        evidently_mb = _peak_mb(lambda: drift_report(current, reference))
        scipy_mb = _peak_mb(lambda: scipy_drift(current, reference))
        print(f"{label:>22} {len(current):>7,} {evidently_s:>12.2f} {scipy_s:>8.3f} {evidently_s / scipy_s:>6.0f} "
              f"{evidently_mb:>13.0f} {scipy_mb:>9.1f} {len(report.html) / 1e6:>8.1f} "
              f"{report.drift_share:>6.2f} ({agree})")
    print(f"\npeak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
