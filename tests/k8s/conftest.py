import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.k8s import chart

ROOT = Path(__file__).resolve().parents[2]
OUR_VARIABLES = ("DAGSTER_EXECUTOR", "EXECUTOR_MAX_CONCURRENT", "K8S_", "TRAINING_", "TORCH_DEVICE")

_loaded: dict[tuple, dict] = {}


def load_code_location(env: dict[str, str]) -> dict:
    """``tests/k8s/launch_paths.py`` in a child process with ``env`` on top of a clean environment.

    Cached per environment: loading the code location costs about 2 s.
    """
    key = tuple(sorted(env.items()))
    if key not in _loaded:
        base = {k: v for k, v in os.environ.items() if not k.startswith(OUR_VARIABLES)}
        out = subprocess.run(
            [sys.executable, "-m", "tests.k8s.launch_paths"],
            cwd=ROOT, env={**base, "PYTHONPATH": str(ROOT), **env}, capture_output=True, text=True, timeout=300,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        _loaded[key] = json.loads(out.stdout)
    return _loaded[key]


@pytest.fixture
def kubeconfig(tmp_path) -> str:
    """A kubeconfig naming a cluster that is never called: the run launcher loads one when it starts."""
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: offline\n"
        "clusters: [{name: offline, cluster: {server: 'https://127.0.0.1:6443'}}]\n"
        "users: [{name: offline, user: {}}]\n"
        "contexts: [{name: offline, context: {cluster: offline, user: offline}}]\n"
    )
    return str(path)


@pytest.fixture
def chart_env(monkeypatch):
    """The variables the chart sets on every Dagster pod, which the instance's run launcher config names."""
    monkeypatch.setenv("DAGSTER_HOME", "/opt/dagster/dagster_home")
    monkeypatch.setenv("DAGSTER_K8S_INSTANCE_CONFIG_MAP", "flight-delays-dagster-instance")
    monkeypatch.setenv("DAGSTER_K8S_PG_PASSWORD_SECRET", "dagster-postgresql-secret")
    monkeypatch.setenv("DAGSTER_K8S_PIPELINE_RUN_ENV_CONFIGMAP", "flight-delays-dagster-pipeline-env")


def validated_run_launcher_config(values: dict, kubeconfig_file: str) -> dict:
    """The chart's run launcher config, checked against ``K8sRunLauncher.config_type()`` by Dagster's config system."""
    import dagster as dg
    from dagster_k8s import K8sRunLauncher

    @dg.op(config_schema=K8sRunLauncher.config_type())
    def run_launcher_config_probe():
        """Carries the launcher's schema so the public ``validate_run_config`` can check a value against it."""

    @dg.job
    def probe():
        run_launcher_config_probe()

    config = chart.run_launcher_config(values, kubeconfig_file=kubeconfig_file)
    resolved = dg.validate_run_config(probe, {"ops": {"run_launcher_config_probe": {"config": config}}})
    return resolved["ops"]["run_launcher_config_probe"]["config"]


@pytest.fixture
def run_launcher_from(kubeconfig, chart_env):
    """Build the instance's K8sRunLauncher from our values (its constructor talks to no cluster)."""

    def build(values: dict):
        from dagster_k8s import K8sRunLauncher

        return K8sRunLauncher(**validated_run_launcher_config(values, kubeconfig))

    return build
