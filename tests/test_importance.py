"""Permutation importance by feature group (ml/importance.py) and its record in MLflow."""

import numpy as np
import pandas as pd
import pytest

from ml.features import FEATURE_COLUMNS, WEATHER_FEATURES
from ml.evaluation import Importance
from ml.importance import as_records, feature_groups, markdown_table, permutation_importance
from tests.serving_helpers import january_features


@pytest.fixture(scope="module")
def days() -> pd.DataFrame:
    features = january_features(last_day=5)
    return features[features["arrived_late"].notna()].reset_index(drop=True)


def test_every_feature_is_in_exactly_one_group():
    groups = feature_groups(list(FEATURE_COLUMNS))
    members = [c for columns in groups.values() for c in columns]
    assert sorted(members) == sorted(FEATURE_COLUMNS)
    assert set(groups["weather"]) == set(WEATHER_FEATURES) and all(c.startswith("plane_") for c in groups["plane"])
    assert "flight" not in members


def test_only_the_group_a_scorer_uses_matters(days):
    labels = days["arrived_late"].astype(int).to_numpy()
    # a scorer that reads the departure hour and nothing else: late flights leave late in the day
    score = lambda frame: frame["sched_dep_hour"].to_numpy(dtype=float)  # noqa: E731
    groups = feature_groups(list(FEATURE_COLUMNS))
    auc, importance = permutation_importance(score, days, labels, groups, repeats=2)
    by_group = {g.group: g for g in importance}
    assert auc > 0.55 and importance[0].group == "sched_dep_hour"
    assert by_group["sched_dep_hour"].auc_drop > 0.03
    assert all(g.auc_drop == 0.0 for name, g in by_group.items() if name != "sched_dep_hour")


def test_a_group_is_shuffled_together(days):
    """One permutation for the whole group: a scorer of the difference of two weather columns keeps its
    pairs (its AUC drops as if the group were one feature), never sees a mixed pair."""
    labels = days["arrived_late"].astype(int).to_numpy()
    seen = []

    def score(frame):
        seen.append((frame["temp"] - frame["dewp"]).to_numpy())
        return frame["humid"].fillna(50).to_numpy(dtype=float)

    permutation_importance(score, days, labels, {"weather": WEATHER_FEATURES}, repeats=1)
    assert sorted(np.round(seen[0][~np.isnan(seen[0])], 6)) == sorted(np.round(seen[1][~np.isnan(seen[1])], 6))


def test_drift_table_lines_versions_up_by_group_with_the_change():
    from ml.importance import drift_table

    table = drift_table({
        "1": {"test_roc_auc": 0.75, "groups": [{"group": "weather", "auc_drop": 0.02}, {"group": "origin so far", "auc_drop": 0.10}]},
        "3": {"test_roc_auc": 0.79, "groups": [{"group": "origin so far", "auc_drop": 0.19}, {"group": "history", "auc_drop": 0.004}]},
    }).splitlines()
    assert table[0] == "| group | v1 | v3 | v3 − v1 |"
    assert table[2] == "| test ROC AUC | 0.7500 | 0.7900 | |"
    assert table[3:] == ["| origin so far | 0.1000 | 0.1900 | +0.0900 |", "| weather | 0.0200 | – | – |",
                         "| history | – | 0.0040 | – |"]
    assert drift_table({}) == ""


def test_importance_is_logged_with_the_run_and_read_back_by_version(mlflow_registry, days):
    import mlflow

    labels = days["arrived_late"].astype(int).to_numpy()
    auc, importance = permutation_importance(lambda f: f["sched_dep_hour"].to_numpy(dtype=float), days, labels,
                                             feature_groups(list(FEATURE_COLUMNS)), repeats=1)
    client = mlflow_registry.client()
    run = client.create_run(mlflow_registry.experiment_id())
    mlflow_registry.log_importance(run.info.run_id, Importance(auc, tuple(as_records(importance)), markdown_table(auc, importance)))
    client.set_terminated(run.info.run_id)

    logged = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/explainability/permutation_importance.json")
    assert logged["test_roc_auc"] == pytest.approx(auc) and logged["groups"][0]["group"] == "sched_dep_hour"
    metrics = client.get_run(run.info.run_id).data.metrics
    assert metrics["importance_sched_dep_hour"] == pytest.approx(importance[0].auc_drop)
    assert "| sched_dep_hour |" in mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/explainability/permutation_importance.md")
