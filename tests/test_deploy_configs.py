"""deploy/ is validated statically here (no Docker engine or cluster on these machines)."""

from pathlib import Path

import pytest
import yaml
# The schema check without building the storage (which would connect to Postgres); not public API.
from dagster._core.instance.config import dagster_instance_config

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


@pytest.mark.parametrize("name", ["dagster-local.yaml", "dagster-production.yaml"])
def test_instance_configs_match_dagsters_schema(tmp_path, name):
    (tmp_path / "dagster.yaml").write_text((DEPLOY / name).read_text())
    config, _ = dagster_instance_config(str(tmp_path))  # raises on a schema error
    assert config["telemetry"]["enabled"] is False


def test_production_instance_reads_secrets_from_the_environment():
    storage = yaml.safe_load((DEPLOY / "dagster-production.yaml").read_text())["storage"]["postgres"]["postgres_db"]
    assert storage["password"] == {"env": "DAGSTER_PG_PASSWORD"}


def test_run_workers_wait_for_the_compute_log_tail_so_a_steps_last_lines_reach_the_container_log():
    """Dagster mirrors a step's stderr through `tail -F` and stops it when the step ends (dagster#23336)."""
    import inspect

    from dagster._core.execution import compute_logs

    name = "DAGSTER_COMPUTE_LOG_TAIL_WAIT_AFTER_FINISH"
    assert name in inspect.getsource(compute_logs.execute_posix_tail), "the installed Dagster reads this variable"
    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    (code,) = values["dagster-user-deployments"]["deployments"]
    assert code["includeConfigInLaunchedRuns"]["enabled"], "the code server's env reaches run workers and step pods"
    assert float({e["name"]: e["value"] for e in code["env"]}[name]) >= 1.0, "tail polls once a second"
    compose = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    assert float(compose["x-user-code-env"][name]) >= 1.0


def test_bentofile_builds_the_service_with_its_sources():
    from bentoml._internal.bento.build_config import BentoBuildConfig

    config = BentoBuildConfig.from_file(str(DEPLOY / "bentofile.yaml"))  # raises on a schema error
    assert config.service == "serving.service:FlightDelay"
    assert {"serving/*.py", "ml/*.py", "infra/*.py"} <= set(config.include)
    assert config.python.lock_packages is False, "locking would need the network at build time"


@pytest.mark.parametrize("name", ["dagster-local.yaml", "dagster-production.yaml"])
def test_every_instance_monitors_runs_and_retries_only_infrastructure_failures(tmp_path, name):
    (tmp_path / "dagster.yaml").write_text((DEPLOY / name).read_text())
    config, _ = dagster_instance_config(str(tmp_path))
    monitoring, retries = config["run_monitoring"], config["run_retries"]
    assert monitoring["enabled"] and monitoring["max_runtime_seconds"] > 0 and monitoring["start_timeout_seconds"] > 0
    assert monitoring["max_resume_run_attempts"] == 0, "neither launcher can resume a run"
    assert retries["enabled"] and retries["max_retries"] >= 1
    assert retries["retry_on_asset_or_op_failure"] is False, "steps retry their own I/O; a data failure would repeat"


def test_a_dead_worker_is_told_from_a_live_one_and_from_a_reused_pid():
    """The orphaned-run sensor's check: the worker's pid, its liveness, and pid reuse."""
    import signal
    import subprocess
    import time

    from sensors.orphaned_runs import process_health

    logged_at = time.time()
    worker = subprocess.Popen(["sleep", "60"])
    assert process_health(worker.pid, logged_at)[0]
    assert not process_health(worker.pid, logged_at - 3600)[0], "a pid reused by a newer process is not the worker"
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    alive, why = process_health(worker.pid, logged_at)
    assert not alive and str(worker.pid) in why


def test_bentofile_builds_a_lean_cpu_image_with_the_pinned_versions():
    """torch is the CPU build from PyTorch's CPU index (PyPI's Linux torch pulls GBs of CUDA wheels), and
    every package is pinned at constraints.txt's version, so `bentoml containerize` builds what we tested."""
    import re

    from bentoml._internal.bento.build_config import BentoBuildConfig

    config = BentoBuildConfig.from_file(str(DEPLOY / "bentofile.yaml"))
    constraints = dict(
        line.lower().split("==", 1)
        for line in (DEPLOY.parent / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    pins = dict(re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", package).groups() for package in config.python.packages)
    assert pins["torch"] == f"{constraints['torch'].split('+')[0]}+cpu", "a +cpu pin matches no CUDA wheel"
    assert "https://download.pytorch.org/whl/cpu" in [config.python.index_url, *(config.python.extra_index_url or [])]
    for name, version in pins.items():
        assert version.split("+")[0] == constraints[name.lower()].split("+")[0], f"{name}: bentofile {version}"
    assert config.docker.distro == "debian" and config.docker.python_version == "3.11"
    assert config.docker.cuda_version is None and config.docker.base_image is None
    envs = {env.name: env.value for env in config.envs}
    assert envs.get("UV_INDEX_STRATEGY") == "unsafe-best-match", "uv would stop at the CPU index for numpy, fsspec"


BUILD_A_BENTO = """
import json, sys, tempfile
from pathlib import Path
from tests.serving_helpers import january_features, store_model, train_small_unit
from serving.build import build_bento
unit_dir, _ = train_small_unit(january_features(), Path(tempfile.mkdtemp()))
print(json.dumps(build_bento(store_model(unit_dir, "1"), "1")))
"""


@pytest.mark.slow
def test_the_built_bentos_dockerfile_installs_cpu_torch_as_a_non_root_user(tmp_path):
    """What `bentoml containerize` would build, rendered by a real `bentoml build` (no Docker needed)."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "PYTHONPATH": str(DEPLOY.parent)}
    env.pop("FLIGHT_DELAY_MODEL_TAG", None)
    done = subprocess.run([sys.executable, "-c", BUILD_A_BENTO], cwd=DEPLOY.parent, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    bento = Path(json.loads(done.stdout.strip().splitlines()[-1])["path"])
    requirements = (bento / "env" / "python" / "requirements.txt").read_text().splitlines()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in requirements
    assert "torch==2.13.0+cpu" in requirements
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile
    assert dockerfile.index("ENV UV_INDEX_STRATEGY=") < dockerfile.index("pip install -r")
    assert [line for line in dockerfile.splitlines() if line.startswith("USER ")][-1] == "USER bentoml"
    assert "nvidia" not in dockerfile.lower() and "cuda" not in dockerfile.lower()
