"""A trained candidate judged on its test days: one pure evaluation, one typed result.

Everything the registry records and the asset reports about a candidate is computed here, once, without
Dagster or MLflow: the model's test metrics, the baseline's and the champion's on the same rows, the
behavioural tests, permutation importance by feature group, the verdict, and the drift reference sample.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ml.evidence import Interval
from ml.gates import BASELINE_TOLERANCE, PROMOTION_CONFIDENCE, PROMOTION_MARGIN

if TYPE_CHECKING:
    import pandas as pd

    from ml.evaluate import BehaviouralResult
    from ml.promotion import Verdict

VERSION = "2"
"""Bump when what an evaluation computes changes (tests/test_module_versions.py)."""

Scorer = Callable[["pd.DataFrame"], Any]


@dataclass(frozen=True)
class EvaluationSettings:
    seed: int = 7
    behaviour_sample: int = 2000
    baseline_tolerance: float = BASELINE_TOLERANCE
    promotion_confidence: float = PROMOTION_CONFIDENCE
    promotion_margin: float = PROMOTION_MARGIN


@dataclass(frozen=True)
class Importance:
    """Permutation importance by feature group on the test set (``ml/importance.py``)."""

    test_roc_auc: float
    groups: tuple[dict, ...]
    table: str
    """The same as a markdown table."""


@dataclass(frozen=True)
class Evaluation:
    """A candidate, the baseline and the champion scored on the same test rows, and the verdict."""

    metrics: Mapping[str, float]
    baseline: Mapping[str, float]
    champion: Mapping[str, float] | None
    """None: there was no champion to compare with."""
    champion_version: str | None
    champion_gain: Interval | None
    """AUC(candidate) − AUC(champion) on the same test flights, with its paired DeLong interval."""
    behaviour: tuple[BehaviouralResult, ...]
    importance: Importance
    verdict: Verdict
    settings: EvaluationSettings
    test_rows: int
    test_days: tuple[str, str]
    """First and last day of the test flights: the window the comparison with the champion stands on."""
    reference: pd.DataFrame = field(repr=False, compare=False)
    """A stratified sample of the training rows: what drift is later measured against."""
    example: pd.DataFrame = field(repr=False, compare=False)
    """The first test rows' feature columns: the input example registered with the model."""

    @property
    def roc_auc(self) -> float:
        return self.metrics["roc_auc"]

    def summary(self) -> dict[str, float | str]:
        """The figures people compare, rounded for display (metadata, tags)."""
        return {
            "evaluated_against_champion": self.champion_version or "none",
            "test_roc_auc": round(self.metrics["roc_auc"], 4),
            "test_pr_auc": round(self.metrics["pr_auc"], 4),
            "test_log_loss": round(self.metrics["log_loss"], 4),
            "test_ece": round(self.metrics["ece"], 4),
            "baseline_test_roc_auc": round(self.baseline["roc_auc"], 4),
            "champion_test_roc_auc": round(self.champion["roc_auc"], 4) if self.champion else "n/a",
            "champion_gain": self.champion_gain.describe() if self.champion_gain else "n/a",
            "test_days": f"{self.test_days[0]}..{self.test_days[1]}",
            "verdict": self.verdict.outcome,
            "verdict_reasons": "; ".join(self.verdict.reasons) or "none",
        }

    def gain_record(self) -> dict | None:
        """The gain over the champion as recorded with the version: the interval and the test days it stands on."""
        if self.champion_gain is None:
            return None
        return {**self.champion_gain.as_record(), "champion_version": self.champion_version,
                "test_days": list(self.test_days)}

    def baseline_description(self) -> str:
        return (f"model {self.roc_auc:.4f} vs baseline {self.baseline['roc_auc']:.4f} "
                f"(tolerance {self.settings.baseline_tolerance})")

    def champion_description(self) -> str:
        if self.champion is None:
            return "no champion yet"
        return (f"model {self.roc_auc:.4f} vs champion v{self.champion_version} {self.champion['roc_auc']:.4f}, "
                f"gain {self.champion_gain.describe()}")

    def behaviour_description(self) -> str:
        return "; ".join(f"{b.name}: {'ok' if b.passed else 'FAILED'} ({b.detail})" for b in self.behaviour)


def evaluate_candidate(
    score: Scorer,
    features: list[str],
    train: pd.DataFrame,
    test: pd.DataFrame,
    champion_score: Scorer | None = None,
    champion_version: str | None = None,
    settings: EvaluationSettings = EvaluationSettings(),
) -> Evaluation:
    """Judge a candidate (``score``: its ``predict_proba``) on ``test`` against the baseline fitted on
    ``train`` and the champion (``champion_score``; None: there is none), on the same rows."""
    from ml.drift import reference_sample
    from ml.evaluate import Baseline, behavioural_suite, classification_metrics, labels
    from ml.evidence import paired_auc_difference
    from ml.features import FEATURE_COLUMNS
    from ml.promotion import judge

    y_test = labels(test)
    scores = score(test)
    metrics = classification_metrics(y_test, scores)
    baseline = classification_metrics(y_test, Baseline(seed=settings.seed).fit(train).predict_proba(test))
    champion, gain = None, None
    if champion_score is not None:
        champion_scores = champion_score(test)
        champion = classification_metrics(y_test, champion_scores)
        gain = paired_auc_difference(y_test, scores, champion_scores, settings.promotion_confidence)
    sample = test.sample(min(settings.behaviour_sample, len(test)), random_state=settings.seed)
    behaviour = tuple(behavioural_suite(score, sample))
    verdict = judge(
        metrics["roc_auc"], baseline["roc_auc"], gain, behaviour, champion_version=champion_version,
        baseline_tolerance=settings.baseline_tolerance, promotion_margin=settings.promotion_margin,
    )
    return Evaluation(
        metrics=metrics, baseline=baseline, champion=champion, champion_version=champion_version, champion_gain=gain,
        behaviour=behaviour, importance=group_importance(score, features, test, y_test, settings.seed),
        verdict=verdict, settings=settings, test_rows=len(test), reference=reference_sample(train),
        test_days=(str(test["date"].min()), str(test["date"].max())),
        example=test[list(FEATURE_COLUMNS)].head(20),
    )


def group_importance(score: Scorer, features: list[str], test: pd.DataFrame, y_test, seed: int) -> Importance:
    """Permutation importance by feature group on the test set."""
    from ml.importance import as_records, feature_groups, markdown_table, permutation_importance

    auc, groups = permutation_importance(score, test, y_test, feature_groups(features), seed=seed)
    return Importance(auc, tuple(as_records(groups)), markdown_table(auc, groups))
