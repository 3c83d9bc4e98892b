"""deploy/ is validated statically here (no Docker engine or cluster on these machines)."""

from pathlib import Path

import pytest
import yaml
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


def test_bentofile_builds_the_service_with_its_sources():
    from bentoml._internal.bento.build_config import BentoBuildConfig

    config = BentoBuildConfig.from_file(str(DEPLOY / "bentofile.yaml"))  # raises on a schema error
    assert config.service == "serving.service:FlightDelay"
    assert {"serving/*.py", "ml/*.py"} <= set(config.include)
    assert config.python.lock_packages is False, "locking would need the network at build time"
