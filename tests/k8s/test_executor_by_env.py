"""The executor by environment: set on Definitions, so every launch path resolves to it."""

import pytest

from infra import settings
from tests.k8s.conftest import load_code_location

LAUNCH_PATHS = {
    "ui materialization, backfill", "sensor automation_sensor", "sensor landing_zone_sensor",
    "sensor retrain_on_drift_sensor", "sensor deploy_on_promotion_sensor", "schedule daily_monitoring_schedule",
}


@pytest.mark.parametrize(
    ("env", "executor"),
    [({}, "in_process"), ({"DAGSTER_EXECUTOR": "multiprocess"}, "multiprocess"), ({"DAGSTER_EXECUTOR": "k8s"}, "k8s")],
)
def test_every_launch_path_resolves_to_the_executor_the_environment_names(env, executor):
    loaded = load_code_location(env)
    assert LAUNCH_PATHS <= set(loaded["paths"])
    assert {path: d["executor"] for path, d in loaded["paths"].items()} == dict.fromkeys(loaded["paths"], executor)
    assert loaded["dagster_k8s_imported"] == (executor == "k8s")


def test_the_k8s_executor_takes_its_config_from_settings():
    env = {
        "DAGSTER_EXECUTOR": "k8s", "K8S_JOB_NAMESPACE": "ml-jobs", "K8S_IMAGE_PULL_POLICY": "Always",
        "K8S_ENV_SECRETS": "flight-delays-secrets, mlflow-creds", "EXECUTOR_MAX_CONCURRENT": "3",
    }
    for path, described in load_code_location(env)["paths"].items():
        config = described["executor_config"]["k8s"]
        assert config["job_namespace"] == "ml-jobs", path
        assert config["image_pull_policy"] == "Always", path
        assert config["env_secrets"] == ["flight-delays-secrets", "mlflow-creds"], path
        assert config["max_concurrent"] == 3, path


def test_multiprocess_caps_its_processes_from_settings():
    loaded = load_code_location({"DAGSTER_EXECUTOR": "multiprocess", "EXECUTOR_MAX_CONCURRENT": "2"})
    assert {d["executor_config"]["multiprocess"]["max_concurrent"] for d in loaded["paths"].values()} == {2}


def test_an_unknown_executor_is_refused_with_the_choices(monkeypatch):
    monkeypatch.setenv("DAGSTER_EXECUTOR", "celery")
    with pytest.raises(ValueError, match="in_process, multiprocess, k8s"):
        settings.executor()


def test_a_pull_policy_kubernetes_does_not_know_is_refused_before_any_pod(monkeypatch):
    """dagster-k8s's schema takes any string here; a cluster would refuse the pod only at launch."""
    monkeypatch.setenv("K8S_IMAGE_PULL_POLICY", "Sometimes")
    with pytest.raises(ValueError, match="Always, IfNotPresent, Never"):
        settings.executor()
