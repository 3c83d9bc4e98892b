"""Calibrate a daily drift check: which columns, per-column threshold and drift-share threshold.

    .venv/bin/python bench/drift_calibration.py              # every day of 2013: ~80 s on 2 idle cores, ~3 min beside another benchmark
    .venv/bin/python bench/drift_calibration.py --step 3     # every 3rd day: ~40-60 s

Question: a daily ``drift_check`` compares ONE day of served traffic (~900 flights) against a
10,000-row reference sampled from the champion's training window. It should stay quiet on days like
the training window and fire once the season has clearly changed.

Reference: ``reference_sample`` of the features of 2013-01-01..2013-03-31 (all scheduled flights,
cancelled ones included, as served traffic has them). Current: each sampled day of 2013, all its
flights. Every day is scored once with ``scipy_drift`` over all FEATURE_COLUMNS (with a 10k
reference every test is a distance, so a setting's drifted columns are the scores >= its
threshold); the settings below are read off those scores, and the script checks on a few days that
``scipy_drift`` run with the setting's own columns and threshold, and Evidently's ``evidently_report``,
give the same answer.

Settings: (A) all FEATURE_COLUMNS at 0.1 (Evidently's default); (B) without the day-level columns
day_of_week, origin_day_departures, carrier_day_departures at 0.1; (C) B at 0.2; (D) B at 0.3;
(E) weather columns only at 0.2; (S) schedule and fleet columns only (no weather, no day-level or
hourly counts) at 0.2; (R) the recommendation: temp and dewp at 2.75. For each: drift share by
month (mean/min/max), and the drift-share threshold that best separates in-window days (Jan-Mar)
from clearly-out days (Jun-Aug) — maximum of detection rate minus false-alarm rate, ties broken by
fewer firings on Apr 1-15 (just after the window), then by the higher threshold — with its
false-alarm rate on Jan-Mar, detection rate on Jun-Aug and firing rate on Apr 1-15. Then how often
R fires each month against a reference of 2013-05-01..2013-08-31 (the model retrained in summer).

Prints figures; asserts nothing beyond the cross-checks.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.features import FEATURE_COLUMNS, WEATHER_FEATURES  # noqa: E402
from ml.gates import DRIFT_COLUMN_THRESHOLD, DRIFT_COLUMNS, DRIFT_SHARE_THRESHOLD  # noqa: E402

WINDOW = ("2013-01-01", "2013-03-31")
RETRAINED_WINDOW = ("2013-05-01", "2013-08-31")
IN_WINDOW_MONTHS = (1, 2, 3)
OUT_MONTHS = (6, 7, 8)
NEAR = ("2013-04-01", "2013-04-15")

DAY_LEVEL_COLUMNS = ("day_of_week", "origin_day_departures", "carrier_day_departures")
WITHOUT_DAY_LEVEL = tuple(c for c in FEATURE_COLUMNS if c not in DAY_LEVEL_COLUMNS)
SCHEDULE_AND_FLEET = tuple(
    c for c in WITHOUT_DAY_LEVEL if c not in WEATHER_FEATURES and c != "origin_hour_departures"
)

#: The recommendation: a season detector. Only temperature and dew point separate a single day of
#: Jan-Mar from a single day of Jun-Aug; every other column drifts as much within the window.
RECOMMENDED_COLUMNS = DRIFT_COLUMNS
RECOMMENDED_THRESHOLD = DRIFT_COLUMN_THRESHOLD
RECOMMENDED_SHARE = DRIFT_SHARE_THRESHOLD  # fire when drift_share >= 0.5: either column

SETTINGS = {
    "A": ("all FEATURE_COLUMNS", FEATURE_COLUMNS, 0.1),
    "B": ("no day-level columns", WITHOUT_DAY_LEVEL, 0.1),
    "C": ("no day-level columns", WITHOUT_DAY_LEVEL, 0.2),
    "D": ("no day-level columns", WITHOUT_DAY_LEVEL, 0.3),
    "E": ("weather columns", WEATHER_FEATURES, 0.2),
    "S": ("schedule and fleet columns", SCHEDULE_AND_FLEET, 0.2),
    "R": ("temp, dewp (recommended)", RECOMMENDED_COLUMNS, RECOMMENDED_THRESHOLD),
}

#: Candidates around the recommendation, to show how sharp the choice is.
GRID_COLUMNS = {"temp": ("temp",), "temp+dewp": ("temp", "dewp"), "temp+dewp+humid": ("temp", "dewp", "humid")}
GRID_THRESHOLDS = (1.0, 1.5, 2.0, 2.25, 2.5, 2.75, 3.0)

CROSS_CHECK_DAYS = ("2013-01-15", "2013-04-09", "2013-07-15")  # Jan 15 has no wind_gust at all: a skip


def _features() -> pd.DataFrame:
    from ml.contracts import AIRPORTS, FLIGHTS, PLANES, WEATHER
    from ml.features import build_features
    from ml.parsing import parse_frame
    from ml.reference_data import read_table

    def typed(table, contract):
        return parse_frame(read_table(table), contract, table).frame

    return build_features(typed("flights", FLIGHTS), typed("weather", WEATHER), typed("planes", PLANES), typed("airports", AIRPORTS))


def _between(features: pd.DataFrame, window: tuple[str, str]) -> pd.DataFrame:
    return features[(features.date >= window[0]) & (features.date <= window[1])]


def _scores(by_day: dict[str, pd.DataFrame], reference: pd.DataFrame, columns) -> pd.DataFrame:
    """One row per day: each column's distance, NaN where the column was skipped (all null that day)."""
    from ml.drift import scipy_drift

    rows = {}
    for day, current in by_day.items():
        result = scipy_drift(current, reference, columns=columns)
        bad = set(result.column_tests.values()) - {"wasserstein", "jensenshannon"}
        if bad:
            raise RuntimeError(f"{day}: p-value tests {bad} where distances were expected (reference too small?)")
        rows[day] = result.column_scores
    return pd.DataFrame.from_dict(rows, orient="index").reindex(columns=list(columns)).rename_axis("date")


def _share(scores: pd.DataFrame, columns, threshold: float) -> pd.Series:
    """drift_share per day as drift_report computes it: drifted over evaluated (0.0 if none evaluated)."""
    part = scores[list(columns)]
    evaluated = part.notna().sum(axis=1)
    drifted = (part >= threshold).sum(axis=1)
    return (drifted / evaluated.where(evaluated > 0)).fillna(0.0)


def _groups(index: pd.Index) -> dict[str, np.ndarray]:
    month = index.str[5:7].astype(int).to_numpy()
    return {
        "in": np.isin(month, IN_WINDOW_MONTHS),
        "out": np.isin(month, OUT_MONTHS),
        "near": np.asarray((index >= NEAR[0]) & (index <= NEAR[1]), dtype=bool),
    }


def _rates(share: pd.Series, cut: float) -> tuple[float, float, float]:
    g = _groups(share.index)
    fire = (share >= cut).to_numpy()
    return tuple(float(fire[g[k]].mean()) if g[k].any() else float("nan") for k in ("in", "out", "near"))


def _best_cut(share: pd.Series) -> tuple[float, float, float, float]:
    """(cut, false alarms Jan-Mar, detection Jun-Aug, firing Apr 1-15) for the best 'share >= cut'."""
    best = None
    for cut in sorted(set(share.round(6)) - {0.0}) or [1.0]:
        fa, det, near = _rates(share, cut)
        key = (det - fa, -(near if near == near else 0.0), cut)
        if best is None or key > best[0]:
            best = (key, (cut, fa, det, near))
    return best[1]


def _month_table(shares: dict[str, pd.Series]) -> str:
    frame = pd.DataFrame(shares)
    month = frame.index.str[5:7].astype(int)
    stats = frame.groupby(month).agg(["mean", "min", "max"])
    days = frame.groupby(month).size()
    lines = ["month days  " + "  ".join(f"{k:^17}" for k in shares)]
    lines.append("            " + "  ".join(f"{'mean  min  max':^17}" for _ in shares))
    for m in stats.index:
        cells = "  ".join(
            f"{stats.loc[m, (k, 'mean')]:5.2f}{stats.loc[m, (k, 'min')]:5.2f}{stats.loc[m, (k, 'max')]:5.2f}  " for k in shares
        )
        lines.append(f"{m:5d} {days[m]:4d}  {cells}")
    return "\n".join(lines)


def _cross_check(features, reference) -> None:
    """Read-off shares == scipy_drift with the setting's own arguments == Evidently's evidently_report."""
    from ml.drift import scipy_drift
    from ml.drift_evidently import evidently_report

    by_day = {day: features[features.date == day] for day in CROSS_CHECK_DAYS}
    scores = _scores(by_day, reference, FEATURE_COLUMNS)
    for key, (_, columns, threshold) in SETTINGS.items():
        for day, current in by_day.items():
            direct = scipy_drift(current, reference, columns=columns, threshold=threshold)
            derived = _share(scores.loc[[day]], columns, threshold).iloc[0]
            if abs(direct.drift_share - derived) > 1e-12:
                raise RuntimeError(f"{key} {day}: read-off share {derived} != scipy_drift {direct.drift_share}")
    print(f"check: shares read off the scores == scipy_drift(columns, threshold) for every setting on {', '.join(by_day)}")

    started = time.perf_counter()
    import evidently.presets  # noqa: F401

    print(f"check: import evidently {time.perf_counter() - started:.1f} s")
    for key in ("A", "R"):
        _, columns, threshold = SETTINGS[key]
        for day in by_day:
            started = time.perf_counter()
            ev = evidently_report(by_day[day], reference, columns=columns, threshold=threshold).result
            seconds = time.perf_counter() - started
            sp = scipy_drift(by_day[day], reference, columns=columns, threshold=threshold)
            worst = max(
                abs(ev.column_scores[c] - sp.column_scores[c]) / max(abs(ev.column_scores[c]), 1e-9) for c in ev.column_scores
            )
            same = ev.drifted_columns == sp.drifted_columns and ev.skipped_columns == sp.skipped_columns
            print(
                f"check: evidently_report vs scipy_drift, setting {key}, {day}: share {ev.drift_share:.3f} vs {sp.drift_share:.3f}, "
                f"same drifted and skipped columns: {same}, worst relative score gap {worst:.1e} (Evidently {seconds:.1f} s)"
            )
            if not same or worst > 1e-6:
                raise RuntimeError(f"Evidently and scipy disagree on {day} (setting {key})")


def main() -> int:
    from ml.drift import reference_sample

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--step", type=int, default=1, help="score every N-th day of 2013 (default 1: all)")
    parser.add_argument("--no-evidently", action="store_true", help="skip the Evidently cross-check")
    args = parser.parse_args()

    t0 = time.perf_counter()
    features = _features()
    days = sorted(features.date.unique())[:: args.step]
    by_day = {d: rows for d, rows in features[features.date.isin(days)].groupby("date", sort=True)}
    reference = reference_sample(_between(features, WINDOW))
    print(
        f"features 2013: {len(features):,} rows in {time.perf_counter() - t0:.1f} s; reference {WINDOW[0]}..{WINDOW[1]}: "
        f"{len(reference):,} rows; {len(days)} days scored (every {args.step}), "
        f"median {int(np.median([len(v) for v in by_day.values()]))} flights a day"
    )

    t1 = time.perf_counter()
    scores = _scores(by_day, reference, FEATURE_COLUMNS)
    print(f"scored {len(days)} days x {len(FEATURE_COLUMNS)} columns with scipy_drift in {time.perf_counter() - t1:.1f} s\n")

    g = _groups(scores.index)
    print("Per-column distance, one day vs the Jan-Mar reference (Jensen-Shannon for carrier/origin/dest/plane_engines,")
    print("normed Wasserstein otherwise); 'fires@0.1/0.2' = share of Jan-Mar days | Jun-Aug days at or above it:")
    print(f"{'column':>24} {'Jan-Mar med':>11} {'max':>5} {'Jun-Aug med':>11} {'min':>5} {'fires@0.1':>11} {'fires@0.2':>11}")
    for c in FEATURE_COLUMNS:
        i, o = scores.loc[g["in"], c].dropna(), scores.loc[g["out"], c].dropna()
        print(
            f"{c:>24} {i.median():11.2f} {i.max():5.2f} {o.median():11.2f} {o.min():5.2f} "
            f"{(i >= 0.1).mean():5.2f}|{(o >= 0.1).mean():4.2f} {(i >= 0.2).mean():5.2f}|{(o >= 0.2).mean():4.2f}"
        )

    shares = {key: _share(scores, columns, threshold) for key, (_, columns, threshold) in SETTINGS.items()}
    print("\nSettings:")
    for key, (label, columns, threshold) in SETTINGS.items():
        print(f"  {key}: {label}, per-column threshold {threshold} ({len(columns)} columns: {', '.join(columns)})")
    print("\nDrift share by month, one day vs the Jan-Mar reference:")
    print(_month_table(shares))

    print(f"\nBest drift-share threshold (fire when share >= it): in-window Jan-Mar ({g['in'].sum()} days) vs "
          f"Jun-Aug ({g['out'].sum()} days), and firing on Apr 1-15 ({g['near'].sum()} days):")
    print(f"{'setting':>8} {'share >=':>9} {'false alarms Jan-Mar':>21} {'detection Jun-Aug':>18} {'fires Apr 1-15':>15}")
    for key, share in shares.items():
        cut, fa, det, near = _best_cut(share)
        print(f"{key:>8} {cut:9.3f} {fa:21.2f} {det:18.2f} {near:15.2f}")
    fa, det, near = _rates(shares["R"], RECOMMENDED_SHARE)
    print(f"{'R as set':>8} {RECOMMENDED_SHARE:9.3f} {fa:21.2f} {det:18.2f} {near:15.2f}")

    print("\nGrid around the recommendation (best share threshold for each):")
    print(f"{'columns':>16} {'per-col':>8} {'share >=':>9} {'false alarms Jan-Mar':>21} {'detection Jun-Aug':>18} {'fires Apr 1-15':>15}")
    for name, columns in GRID_COLUMNS.items():
        for threshold in GRID_THRESHOLDS:
            cut, fa, det, near = _best_cut(_share(scores, columns, threshold))
            print(f"{name:>16} {threshold:8.2f} {cut:9.3f} {fa:21.2f} {det:18.2f} {near:15.2f}")

    t2 = time.perf_counter()
    retrained = reference_sample(_between(features, RETRAINED_WINDOW))
    summer = _scores(by_day, retrained, RECOMMENDED_COLUMNS)
    fired = pd.DataFrame({
        "vs Jan-Mar ref": shares["R"] >= RECOMMENDED_SHARE,
        "vs May-Aug ref": _share(summer, RECOMMENDED_COLUMNS, RECOMMENDED_THRESHOLD) >= RECOMMENDED_SHARE,
    })
    month = fired.index.str[5:7].astype(int)
    print(
        f"\nRecommended check ({', '.join(RECOMMENDED_COLUMNS)} at {RECOMMENDED_THRESHOLD}, fire when drift_share >= "
        f"{RECOMMENDED_SHARE}): fraction of days firing, by month ({time.perf_counter() - t2:.1f} s):"
    )
    table = fired.astype(float).groupby(month).mean()
    table.insert(0, "days", fired.groupby(month).size())
    print(table.round(2).to_string())
    blind = scores.index[scores[list(RECOMMENDED_COLUMNS)].isna().all(axis=1)]
    print(
        f"days where the recommended check evaluated no column (no weather: share 0.0, so a gate must also look at "
        f"evaluated_columns): {', '.join(blind) or 'none'}"
    )

    if not args.no_evidently:
        print()
        _cross_check(features, reference)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
