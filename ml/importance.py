"""Global importance of a model version: permutation importance by feature group on its test set.

A group's importance is how much the test ROC AUC drops when the group's columns are shuffled
together across rows (one permutation for the whole group, so features that travel together, such
as the weather of one report, are broken together and not credited twice). Model-agnostic: it takes
any scorer of feature frames, the torch unit or the baseline alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from ml import features as feature_lists

Scorer = Callable[[pd.DataFrame], np.ndarray]


@dataclass(frozen=True)
class GroupImportance:
    group: str
    features: tuple[str, ...]
    auc_drop: float
    """Mean drop of the test ROC AUC over the repeats (positive: the model relies on the group)."""
    auc_drop_std: float


def feature_groups(columns: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """The groups of ``columns`` (a model's features), in their order.

    The weather report (``WEATHER_FEATURES``) and the plane registry (``plane_*``) are one group each,
    then the groups ``ml.features.FEATURE_GROUPS`` declares; a feature in no group is its own group.
    """
    declared = {
        "weather": feature_lists.WEATHER_FEATURES,
        "plane": tuple(c for c in columns if c.startswith("plane_")),
        **feature_lists.FEATURE_GROUPS,
    }
    groups: dict[str, tuple[str, ...]] = {}
    placed: set[str] = set()
    for column in columns:
        if column in placed:
            continue
        group = next((name for name, members in declared.items() if column in members), None)
        if group is None:
            groups[column] = (column,)
            placed.add(column)
        else:
            groups[group] = tuple(c for c in columns if c in declared[group])
            placed.update(groups[group])
    return groups


def permutation_importance(
    score: Scorer,
    frame: pd.DataFrame,
    labels: np.ndarray,
    groups: Mapping[str, Sequence[str]],
    repeats: int = 3,
    seed: int = 0,
    max_rows: int | None = 50_000,
) -> tuple[float, list[GroupImportance]]:
    """``(ROC AUC on frame, importance per group, largest drop first)``.

    ``max_rows`` samples the frame (a fixed seed) to bound the cost: groups × repeats scorings.
    """
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    if max_rows is not None and len(frame) > max_rows:
        keep = np.random.default_rng(seed).choice(len(frame), size=max_rows, replace=False)
        frame, labels = frame.iloc[keep], labels[keep]
    frame = frame.reset_index(drop=True)
    reference = float(roc_auc_score(labels, score(frame)))
    rng = np.random.default_rng(seed)
    out = []
    for group, columns in groups.items():
        drops = []
        for _ in range(repeats):
            order = rng.permutation(len(frame))
            shuffled = frame.copy()
            for column in columns:
                shuffled[column] = frame[column].to_numpy()[order]
            drops.append(reference - float(roc_auc_score(labels, score(shuffled))))
        out.append(GroupImportance(group, tuple(columns), float(np.mean(drops)), float(np.std(drops))))
    return reference, sorted(out, key=lambda g: -g.auc_drop)


def as_records(importance: Sequence[GroupImportance]) -> list[dict]:
    """JSON-ready rows (features joined), as logged to MLflow."""
    return [{**asdict(g), "features": list(g.features)} for g in importance]


def markdown_table(reference_auc: float, importance: Sequence[GroupImportance]) -> str:
    lines = [f"Test ROC AUC {reference_auc:.4f}; drop when each group is shuffled:", "",
             "| group | ROC AUC drop | ± std | features |", "|---|---:|---:|---|"]
    lines += [f"| {g.group} | {g.auc_drop:.4f} | {g.auc_drop_std:.4f} | {', '.join(g.features)} |" for g in importance]
    return "\n".join(lines)


def drift_table(importance_by_version: Mapping[str, Mapping]) -> str:
    """The importance of model versions side by side (oldest first), as ``MlflowRegistry.importance`` returns
    it: one row per group, largest drop in any version first, and the change from the first version to the
    last. Each version is measured on its own test days, so a change mixes the model's and the days'."""
    versions = list(importance_by_version)
    if not versions:
        return ""
    drops = {v: {g["group"]: float(g["auc_drop"]) for g in importance_by_version[v]["groups"]} for v in versions}
    groups = sorted({g for d in drops.values() for g in d}, key=lambda g: -max(d.get(g, 0.0) for d in drops.values()))

    def cell(value: float | None) -> str:
        return "–" if value is None else f"{value:.4f}"

    lines = ["| group | " + " | ".join(f"v{v}" for v in versions) + f" | v{versions[-1]} − v{versions[0]} |",
             "|---|" + "---:|" * (len(versions) + 1),
             "| test ROC AUC | " + " | ".join(cell(importance_by_version[v].get("test_roc_auc")) for v in versions) + " | |"]
    for group in groups:
        first, last = drops[versions[0]].get(group), drops[versions[-1]].get(group)
        change = None if first is None or last is None else last - first
        lines.append(f"| {group} | " + " | ".join(cell(drops[v].get(group)) for v in versions)
                     + f" | {'–' if change is None else f'{change:+.4f}'} |")
    return "\n".join(lines)
