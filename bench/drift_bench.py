"""Cost of a day's drift report by the asset's two engines: Evidently's report (the default) and scipy ("fast").

    .venv/bin/python bench/drift_bench.py            # ~90 s on 2 cores

Reference: a 10,000-row month-stratified sample of Jan–Jun 2013 features (the training window).
Current: one day of July traffic, then the whole month. For each, on the 23 feature columns:
wall time of ``day_drift`` with ``engine="evidently"`` (Evidently's report with the gate, its HTML
and JSON) and ``engine="fast"`` (scipy's tests, a JSON of figures), best of a few runs after a
warm-up, their ratio, and peak memory as tracemalloc's peak of Python-tracked allocations (numpy
and pandas buffers included) during one call, measured in a separate run because tracing slows
the call down. Prints figures; asserts nothing.
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
    from ml.drift import reference_sample
    from ml.drift_day import day_drift
    from ml.features import FEATURE_COLUMNS

    print(f"import ml.drift (pandas, numpy): {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    import scipy.stats  # noqa: F401

    print(f"import scipy.stats: {time.perf_counter() - started:.1f} s (paid once per process by the fast engine)")
    started = time.perf_counter()
    import evidently.presets  # noqa: F401

    print(f"import evidently: {time.perf_counter() - started:.1f} s (paid once per process by the evidently engine)")

    started = time.perf_counter()
    reference = reference_sample(_features(TRAINING_MONTHS))
    july = _features((CURRENT_MONTH,))
    print(f"features Jan–Jul built in {time.perf_counter() - started:.1f} s; reference {len(reference):,} rows, "
          f"{len(FEATURE_COLUMNS)} feature columns")

    def evidently(current):
        return day_drift(current, reference, engine="evidently")

    def fast(current):
        return day_drift(current, reference, engine="fast")

    day = july[july.date == CURRENT_DAY]
    for run in (evidently, fast):  # warm-up: first-call caches
        run(day)
    print("\nevidently = Evidently's report + gate, HTML and JSON (the daily asset); fast = scipy's tests, JSON (backfills)")
    print(f"{'current':>22} {'rows':>7} {'evidently s':>12} {'fast s':>8} {'ratio':>6} {'evidently MB':>13} "
          f"{'fast MB':>8} {'files KB':>9} {'drift share':>12}")
    for label, current, repeats in (
        (f"one day ({CURRENT_DAY})", day, 3),
        ("a month (July)", july, 2),
    ):
        evidently_s = _best_seconds(lambda: evidently(current), repeats)
        fast_s = _best_seconds(lambda: fast(current), 5)
        report, figures = evidently(current), fast(current)
        agree = "agree" if report.result.drifted_columns == figures.result.drifted_columns else "DISAGREE"
        evidently_mb = _peak_mb(lambda: evidently(current))
        fast_mb = _peak_mb(lambda: fast(current))
        size_kb = sum(len(b) for b in report.files.values()) / 1e3
        print(f"{label:>22} {len(current):>7,} {evidently_s:>12.2f} {fast_s:>8.3f} {evidently_s / fast_s:>6.0f} "
              f"{evidently_mb:>13.0f} {fast_mb:>8.1f} {size_kb:>9.0f} {report.result.drift_share:>6.2f} ({agree})")
    print(f"\npeak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
