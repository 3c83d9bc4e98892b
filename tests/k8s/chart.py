"""What the Dagster chart makes of our values, as far as we can say without helm: merged values, the
instance's run launcher config, and the container context a user deployment gives its runs.

The translations mirror the chart's templates (helpers/instance/_run-launcher.tpl and the
user-deployments subchart's DAGSTER_CLI_API_GRPC_CONTAINER_CONTEXT); only `helm template` on the real
chart proves them (docs/kubernetes.md says what stays unvalidated).
"""

from pathlib import Path
from typing import Any

import yaml

HELM_DIR = Path(__file__).resolve().parents[2] / "deploy" / "helm"
RELEASE_NAMESPACE = "flight-delays"
SERVICE_ACCOUNT = "flight-delays-dagster"


def load_values(*names: str) -> dict[str, Any]:
    """Our values files merged as helm merges ``-f a -f b``: maps deep, lists and scalars replaced."""
    merged: dict[str, Any] = {}
    for name in names:
        merged = _merge(merged, yaml.safe_load((HELM_DIR / name).read_text()))
    return merged


def _merge(onto: dict, overlay: dict) -> dict:
    out = dict(onto)
    for key, value in overlay.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _snake(key: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in key)


def run_launcher_config(values: dict[str, Any], kubeconfig_file: str | None = None) -> dict[str, Any]:
    """The ``run_launcher.config`` the chart writes into the instance ConfigMap for K8sRunLauncher.

    ``kubeconfig_file`` swaps in-cluster config for a local file, the one change a test needs.
    """
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    config: dict[str, Any] = {
        "load_incluster_config": kubeconfig_file is None and launcher["loadInclusterConfig"],
        "job_namespace": launcher.get("jobNamespace") or RELEASE_NAMESPACE,
        "image_pull_policy": launcher["imagePullPolicy"],
        "service_account_name": SERVICE_ACCOUNT,
        "dagster_home": {"env": "DAGSTER_HOME"},
        "instance_config_map": {"env": "DAGSTER_K8S_INSTANCE_CONFIG_MAP"},
        "postgres_password_secret": {"env": "DAGSTER_K8S_PG_PASSWORD_SECRET"},
        "env_config_maps": [{"env": "DAGSTER_K8S_PIPELINE_RUN_ENV_CONFIGMAP"}]
        + [c["name"] for c in launcher.get("envConfigMaps") or [] if "name" in c],
    }
    if kubeconfig_file:
        config["kubeconfig_file"] = kubeconfig_file
    if launcher.get("envSecrets"):
        config["env_secrets"] = [s["name"] for s in launcher["envSecrets"] if "name" in s]
    for key in ("envVars", "volumeMounts", "volumes", "labels", "resources", "schedulerName", "securityContext"):
        if launcher.get(key):
            config[_snake(key)] = launcher[key]
    if launcher.get("failPodOnRunFailure") is not None:
        config["fail_pod_on_run_failure"] = launcher["failPodOnRunFailure"]
    if launcher.get("runK8sConfig"):
        config["run_k8s_config"] = {_snake(k): v for k, v in launcher["runK8sConfig"].items()}
    return config


def user_deployment(values: dict[str, Any]) -> dict[str, Any]:
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    return deployment


def launched_run_container_context(values: dict[str, Any]) -> dict[str, Any]:
    """What ``includeConfigInLaunchedRuns`` hands each run (and its step pods): the deployment's env and secrets."""
    deployment = user_deployment(values)
    assert deployment["includeConfigInLaunchedRuns"]["enabled"]
    return {
        "k8s": {
            "env_vars": [f"{e['name']}={e['value']}" for e in deployment.get("env", [])],
            "env_secrets": [s["name"] for s in deployment.get("envSecrets", [])],
            "image_pull_policy": deployment["image"]["pullPolicy"],
            "namespace": RELEASE_NAMESPACE,
            "service_account_name": SERVICE_ACCOUNT,
        }
    }


def image(values: dict[str, Any]) -> str:
    spec = user_deployment(values)["image"]
    return f"{spec['repository']}:{spec['tag']}"


def deployment_env(values: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in user_deployment(values).get("env", [])}
