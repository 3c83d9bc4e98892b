"""The summer replay of `make demo` under the old and the new retraining/promotion policy, side by side.

    .venv/bin/python bench/policy_replay.py                      # 2013-06-20..07-20, both policies
    .venv/bin/python bench/policy_replay.py --cache-dir /tmp/pc  # features and trained models cached there

The loop `make demo` runs through the daemon, replayed in one process with the project's own functions,
so both policies see the same days, the same trainings and the same champions: a champion trained on
Jan–Mar 2013 (the demo's bootstrap), then each day of the replay in order. The day's flights are scored
by the champion (its realised ROC AUC is what the table's mean and worst are over); the day's drift
(`ml.drift_day`, the fast engine: the same gate as Evidently's) and performance checks run against it;
a failed check goes to `ml.retraining_policy.decide` (cooldown 0, as `make demo`); a retraining trains on
the 120-day window ending that day, among the days the demo has (Jan–Mar and the replayed days), with
`ml.train` as `delay_model` does, evaluates it with `ml.evaluation.evaluate_candidate`, and promotes or not:

- **old**: performance fails on one day whose ROC AUC is more than 0.05 below the model's test ROC AUC;
  the candidate is promoted when its test ROC AUC is not below the champion's (tolerance 0.0).
- **new**: performance fails when the upper bound of the realised ROC AUC's interval over the last
  `PERFORMANCE_WINDOW_DAYS` days is more than `PERFORMANCE_AUC_TOLERANCE` below; the candidate is promoted
  when the paired interval of its gain over the champion lies above 0 (`ml/gates.py`).

A training window is deterministic (seed 7), so a window both policies train on is trained once (cached).
Failed runs do not exist here (no process can fail); "alerts" are the backoff warnings the policy raises.
Prints a markdown table and the day-by-day timeline.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bootstrap  # noqa: E402,F401  (the project on sys.path)
from policy_calibration import year_features  # noqa: E402

BOOTSTRAP = ("2013-01-01", "2013-03-31")
REPLAY = ("2013-06-20", "2013-07-20")
OLD_MARGIN = 0.05
OLD_MIN_LABELLED = 200


@dataclass
class Model:
    version: int
    unit: object
    test_auc: float
    window_last_day: str
    reference: pd.DataFrame = field(repr=False)


@dataclass
class Loop:
    policy: str
    champion: Model
    window_last_day: str
    rejections: int = 0
    warned: bool = False
    retrains: int = 0
    promotions: int = 0
    not_promoted: int = 0
    failed: int = 0
    alerts: int = 0
    versions: int = 1
    daily_auc: dict[str, float] = field(default_factory=dict)
    scored: dict[str, pd.DataFrame] = field(default_factory=dict)
    timeline: list[str] = field(default_factory=list)


def _days(first: str, last: str) -> list[str]:
    start, end = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    return [(start + dt.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


class Trainer:
    """Trains the 120-day window ending on a day among the days the demo has, once per window (cached)."""

    def __init__(self, features: pd.DataFrame, cache: Path):
        self.features, self.cache, self.trained = features, cache, {}

    def train(self, available: list[str], cutoff: str):
        from ml.dataset import SPLIT, TEST, TRAIN, VALIDATION, WindowSpec, assign_splits, split_days, window_days
        from ml.model import ModelUnit
        from ml.train import TrainConfig, train_model

        spec = WindowSpec(120, cutoff)
        days = window_days(available, spec)
        key = f"{days[0]}_{days[-1]}_{len(days)}"
        window = assign_splits(self.features[self.features["date"].isin(days)], split_days(days, spec))
        parts = {s: window[window[SPLIT] == s] for s in (TRAIN, VALIDATION, TEST)}
        if key not in self.trained:
            path = self.cache / f"unit-{key}"
            if path.exists():
                unit = ModelUnit.load(path)
            else:
                unit = train_model(parts[TRAIN], parts[VALIDATION], TrainConfig(seed=7)).unit
                unit.save(path)
            self.trained[key] = unit
        return self.trained[key], parts


def _score(unit, frame: pd.DataFrame) -> pd.DataFrame:
    from ml.features import LABEL

    labelled = frame[frame[LABEL].notna()]
    return pd.DataFrame({"label": labelled[LABEL].astype(int).to_numpy(),
                         "score": unit.predict_proba(labelled), "model_version": "served"})


def performance_fails(loop: Loop, day: str) -> tuple[bool, str]:
    from sklearn.metrics import roc_auc_score

    from ml.gates import PERFORMANCE_AUC_TOLERANCE, PERFORMANCE_CONFIDENCE, PERFORMANCE_MIN_LABELLED, PERFORMANCE_WINDOW_DAYS
    from ml.performance import windowed_performance

    expected = loop.champion.test_auc
    if loop.policy == "old":
        today = loop.scored[day]
        auc = roc_auc_score(today["label"], today["score"])
        return len(today) >= OLD_MIN_LABELLED and auc < expected - OLD_MARGIN, f"day {auc:.4f}"
    served_since = [d for d in loop.scored if d > loop.champion.window_last_day][-PERFORMANCE_WINDOW_DAYS:]
    evidence = windowed_performance({d: loop.scored[d] for d in served_since}, "served", expected,
                                    tolerance=PERFORMANCE_AUC_TOLERANCE, level=PERFORMANCE_CONFIDENCE,
                                    min_labelled=PERFORMANCE_MIN_LABELLED, min_days=PERFORMANCE_WINDOW_DAYS)
    upper = f"upper {evidence.interval.high:.4f}" if evidence.interval else "not judged"
    return evidence.fails, upper


def drift_fails(loop: Loop, today: pd.DataFrame) -> bool:
    from ml.drift_day import day_drift
    from ml.features import FEATURE_COLUMNS

    drift = day_drift(today[list(FEATURE_COLUMNS)], loop.champion.reference, engine="fast")
    return bool(drift.gate.failed)


def retrain(loop: Loop, trainer: Trainer, available: list[str], day: str) -> str:
    from ml.drift import reference_sample
    from ml.evaluation import evaluate_candidate
    from ml.evaluate import classification_metrics, labels
    from ml.promotion import KEEP_CHAMPION, PROMOTE

    unit, parts = trainer.train(available, day)
    features = [*unit.preprocessor.categorical, *unit.preprocessor.numeric]
    evaluation = evaluate_candidate(unit.predict_proba, features, parts["train"], parts["test"],
                                    loop.champion.unit.predict_proba, str(loop.champion.version))
    loop.retrains += 1
    loop.versions += 1
    loop.window_last_day = day
    verdict = evaluation.verdict
    if loop.policy == "old":
        champion_auc = classification_metrics(labels(parts["test"]), loop.champion.unit.predict_proba(parts["test"]))["roc_auc"]
        beats = evaluation.roc_auc >= champion_auc
        outcome = PROMOTE if beats and verdict.beats_baseline and verdict.behaves else KEEP_CHAMPION
        why = f"{evaluation.roc_auc:.4f} vs champion {champion_auc:.4f}"
    else:
        outcome = verdict.outcome
        why = f"gain {evaluation.champion_gain.describe()}"
    if outcome == PROMOTE:
        loop.promotions += 1
        loop.rejections, loop.warned = 0, False
        loop.champion = Model(loop.versions, unit, evaluation.roc_auc, day, reference_sample(parts["train"]))
        return f"retrain → v{loop.versions} promoted ({why})"
    loop.not_promoted += 1
    loop.rejections += 1
    return f"retrain → v{loop.versions} not promoted ({why})"


def replay(policy: str, features: pd.DataFrame, trainer: Trainer, bootstrap: Model) -> Loop:
    from sklearn.metrics import roc_auc_score

    from ml.retraining_policy import DRIFT, PERFORMANCE, LoopState, PolicySettings, backoff_warning, decide

    settings = PolicySettings(cooldown_s=0)
    loop = Loop(policy, bootstrap, bootstrap.window_last_day)
    available = _days(*BOOTSTRAP)
    for day in _days(*REPLAY):
        available.append(day)
        today = features[features["date"] == day]
        loop.scored[day] = _score(loop.champion.unit, today)
        loop.daily_auc[day] = roc_auc_score(loop.scored[day]["label"], loop.scored[day]["score"])
        performance, perf_note = performance_fails(loop, day)
        drift = drift_fails(loop, today)
        line = f"{day}  v{loop.champion.version}  AUC {loop.daily_auc[day]:.4f}  perf {perf_note}{' FAIL' if performance else ''}  drift {'FAIL' if drift else 'ok'}"
        if performance or drift:
            state = LoopState(trigger=PERFORMANCE if performance else DRIFT, now_s=time.time(),
                              window_last_day=loop.window_last_day, labelled_days=tuple(available),
                              rejections=loop.rejections)
            decision = decide(state, settings)
            line += f"  → {retrain(loop, trainer, available, day) if decision.retrain else 'wait: ' + decision.reason[:60]}"
            warning = backoff_warning(loop.rejections, str(loop.champion.version), settings)
            if warning and not loop.warned:
                loop.alerts += 1
                loop.warned = True
        loop.timeline.append(line)
    return loop


def table(loops: list[Loop]) -> str:
    rows = ["| policy | retrains | promotions | not promoted | failed runs | alerts | mean realised daily AUC | worst |",
            "|---|---|---|---|---|---|---|---|"]
    for loop in loops:
        aucs = np.array(list(loop.daily_auc.values()))
        rows.append(f"| {loop.policy} | {loop.retrains} | {loop.promotions} | {loop.not_promoted} | {loop.failed} | "
                    f"{loop.alerts} | {aucs.mean():.4f} | {aucs.min():.4f} |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/policy_calibration"))
    args = parser.parse_args()
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    features = year_features(args.cache_dir)
    trainer = Trainer(features, args.cache_dir)
    from ml.drift import reference_sample

    unit, parts = trainer.train(_days(*BOOTSTRAP), BOOTSTRAP[1])
    from ml.evaluate import classification_metrics, labels

    test_auc = classification_metrics(labels(parts["test"]), unit.predict_proba(parts["test"]))["roc_auc"]
    bootstrap = Model(1, unit, test_auc, BOOTSTRAP[1], reference_sample(parts["train"]))
    loops = [replay(policy, features, trainer, bootstrap) for policy in ("old", "new")]
    for loop in loops:
        print(f"\n{loop.policy} policy, day by day")
        print("\n".join(loop.timeline))
    print(f"\nsummer replay {REPLAY[0]}..{REPLAY[1]}, {len(_days(*REPLAY))} days "
          f"({time.perf_counter() - started:.0f} s, {len(trainer.trained)} windows trained)\n")
    print(table(loops))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
