"""Every data and feature gate over a year of real days, one day at a time: what each holds back, and why.

    .venv/bin/python bench/gate_calibration.py [--from 2013-01-01] [--to 2013-12-31]

Days are judged as the daily automation materializes them (one partition per run):
1. the landing contracts (``ml/contracts.py`` through ``ml.ingestion``: typing, the Great Expectations
   suite, no entirely-null column) of flights and weather, and once of planes and airports;
2. the feature checks (``ml/feature_checks.py``) on the features of each day whose flights passed
   (a day whose weather was held back gets missing weather, as ``flight_features`` builds it).
For each check: blocking or warning (as ``assets/`` declares them now), the days it fails and the
reasons, and the days the old all-blocking feature gates held back. Prints markdown (docs/gates.md);
asserts nothing.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def ingest_year(first: dt.date, last: dt.date) -> dict[str, dict]:
    """``{dataset: {partition: IngestedPartition}}`` for the daily datasets and the reference tables."""
    from ml.contracts import ALL_ROWS, CONTRACTS
    from ml.ingestion import ingest_partitions
    from ml.reference_data import daily_csvs, reference_csv

    out = {}
    days = [(first + dt.timedelta(d)).isoformat() for d in range((last - first).days + 1)]
    for dataset in ("flights", "weather"):
        files = {day.isoformat(): data for day, data in daily_csvs(dataset, first, last)}

        def read(partition, files=files):
            if partition not in files:
                raise FileNotFoundError(partition)
            return files[partition]

        out[dataset] = ingest_partitions(days, CONTRACTS[dataset], read, lambda p, d=dataset: f"{d} {p}")
    for dataset in ("planes", "airports"):
        out[dataset] = ingest_partitions([ALL_ROWS], CONTRACTS[dataset], lambda _, d=dataset: reference_csv(d),
                                         lambda _, d=dataset: d)
    return out


def day_features(ingested: dict[str, dict]) -> dict:
    """``ml.feature_days.features_for_days`` over the days that passed their contracts, read from memory.

    Without ``late_history`` (a reader answers None for a table it lacks): history features are missing,
    as on the first replayed day, which the null-share gate allows.
    """
    from ml.contracts import ALL_ROWS
    from ml.feature_days import features_for_days

    tables = {
        "raw_flights": {p: r.frame for p, r in ingested["flights"].items()},
        "raw_weather": {p: r.frame for p, r in ingested["weather"].items()},
        "planes": {None: ingested["planes"][ALL_ROWS].frame},
        "airports": {None: ingested["airports"][ALL_ROWS].frame},
    }
    days = sorted(ingested["flights"])
    return features_for_days(lambda table, partition: tables.get(table, {}).get(partition), days, {})


def calibrate(first: dt.date, last: dt.date) -> dict:
    """Per check: ``{"blocking", "days": {day: reason}}``, and the days held back by the old and the new gates."""
    from assets.features import FEATURE_CHECK_BLOCKING, FEATURE_NULLS_CHECK, LABEL_RATE_CHECK, MODEL_INPUTS_CHECK, ROW_COUNT_CHECK
    from ml import feature_checks

    ingested = ingest_year(first, last)
    checks: dict[str, dict] = {}
    for dataset, results in ingested.items():
        name = f"{dataset}: landing_contract"
        held = {}
        for partition, result in results.items():
            if result.missing or result.verdict.passed:
                continue
            held[partition] = "; ".join(result.verdict.reasons())[:300]
        checks[name] = {"blocking": True, "days": held, "effect": "day not ingested" if dataset != "weather" else "day's weather missing"}
        checks[name]["missing_files"] = sum(r.missing for r in results.values())

    built = day_features(ingested)
    frames = {d: f.features for d, f in built.items() if f.features is not None}
    no_weather = {d for d, f in built.items() if f.features is not None and not f.had_weather}
    rules = {
        FEATURE_NULLS_CHECK: lambda d, f: feature_checks.null_shares({d: f}, no_weather),
        LABEL_RATE_CHECK: lambda d, f: feature_checks.label_rate({d: f}),
        ROW_COUNT_CHECK: lambda d, f: feature_checks.row_counts_match({d: f}, {d: built[d].raw_rows}),
        MODEL_INPUTS_CHECK: lambda d, f: feature_checks.model_inputs_intact({d: f}),
    }
    for name, rule in rules.items():
        failed = {}
        for day, frame in frames.items():
            outcome = rule(day, frame)
            if not outcome.passed:
                failed[day] = outcome.detail
        checks[f"features: {name}"] = {"blocking": FEATURE_CHECK_BLOCKING[name], "days": failed,
                                       "effect": "day gets no features" if FEATURE_CHECK_BLOCKING[name] else "warning"}

    flights_held = set(checks["flights: landing_contract"]["days"])
    old_feature_gates = (FEATURE_NULLS_CHECK, LABEL_RATE_CHECK, ROW_COUNT_CHECK)  # all blocking before
    old = flights_held | {d for n in old_feature_gates for d in checks[f"features: {n}"]["days"]}
    new = flights_held | {d for n, b in FEATURE_CHECK_BLOCKING.items() if b for d in checks[f"features: {n}"]["days"]}
    rates = {d: feature_checks.label_rate({d: f}).values["label_rate"] for d, f in frames.items()}
    return {"checks": checks, "days": len(ingested["flights"]), "held_old": sorted(old), "held_new": sorted(new),
            "null_breaches": _null_breaches(frames, no_weather), "label_rates": rates}


def _null_breaches(frames: dict, no_weather: set[str]) -> dict[str, list[tuple[str, float]]]:
    """``{feature: [(day, share), ...]}`` for the days a feature's null share is over its warning limit."""
    from ml.feature_checks import DEFAULT_MAX_NULL_SHARE, MAX_NULL_SHARE, null_shares_by_day
    from ml.features import WEATHER_FEATURES

    out = collections.defaultdict(list)
    for day, shares in null_shares_by_day(frames).items():
        for feature, share in shares.items():
            if feature in WEATHER_FEATURES and day in no_weather:
                continue
            if share > MAX_NULL_SHARE.get(feature, DEFAULT_MAX_NULL_SHARE):
                out[feature].append((day, share))
    return dict(out)


def _days(days) -> str:
    days = sorted(days)
    return ", ".join(days[:4]) + (f" … (+{len(days) - 4})" if len(days) > 4 else "") if days else "–"


def markdown(result: dict, seconds: float) -> str:
    from ml.feature_checks import DEFAULT_MAX_NULL_SHARE, LABEL_RATE_BOUNDS, MAX_NULL_SHARE

    rates = result["label_rates"]
    low, high = min(rates.values()), max(rates.values())
    lines = [
        f"Measured {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.node()} "
        f"({platform.machine()}, Python {platform.python_version()}), {result['days']} days in {seconds:.0f} s.",
        "",
        "| check | kind | days failing | effect | example days | why (first failing day) |",
        "|---|---|---:|---|---|---|",
    ]
    for name, check in result["checks"].items():
        days = check["days"]
        first = days[min(days)] if days else ""
        lines.append(f"| {name} | {'blocking' if check['blocking'] else 'warning'} | {len(days)} | {check['effect']} "
                     f"| {_days(days)} | {first.replace('|', '/')[:160]} |")
    lines += [
        "",
        f"Days held back (no features, no batch predictions, no drift report): **{len(result['held_old'])}** with "
        f"every feature check blocking (before), **{len(result['held_new'])}** now.",
        "",
        f"Daily late rate: lowest {low:.3f} ({min(rates, key=rates.get)}), highest {high:.3f} ({max(rates, key=rates.get)}); "
        f"bounds {LABEL_RATE_BOUNDS[0]}–{LABEL_RATE_BOUNDS[1]}.",
        "",
        "Null shares over the warning limit, per feature (days whose weather was held back excluded):",
        "",
        "| feature | warning above | days over | worst day (share) | example days |",
        "|---|---:|---:|---|---|",
    ]
    for feature, breaches in sorted(result["null_breaches"].items(), key=lambda kv: -len(kv[1])):
        worst = max(breaches, key=lambda b: b[1])
        limit = MAX_NULL_SHARE.get(feature, DEFAULT_MAX_NULL_SHARE)
        lines.append(f"| {feature} | {limit:.0%} | {len(breaches)} | {worst[0]} ({worst[1]:.0%}) | {_days(d for d, _ in breaches)} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--from", dest="first", type=dt.date.fromisoformat, default=dt.date(2013, 1, 1))
    parser.add_argument("--to", dest="last", type=dt.date.fromisoformat, default=dt.date(2013, 12, 31))
    args = parser.parse_args()
    started = time.perf_counter()
    result = calibrate(args.first, args.last)
    print(markdown(result, time.perf_counter() - started))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
