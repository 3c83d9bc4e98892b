"""The stack's service list (the compose contract), its supervisor's bookkeeping, and the Postgres skip rule; no servers."""

import json
import subprocess
import time

import pytest

from pipelines.stack import Service, Stack, StackConfig, StackError, stack_services
from resources.processes import group_members, process_alive
from tests.conftest import postgres_missing, postgres_unavailable
from tests.servers import free_port


def test_services_are_the_compose_contract_in_start_order():
    services = stack_services(StackConfig())
    assert [s.name for s in services] == ["s3", "mlflow", "user-code", "webserver", "daemon"]
    assert [s.port for s in services] == [9000, 5000, 4000, 3000, None]
    assert [s.argv[:3] for s in services] == [
        ("moto_server", "-H", "127.0.0.1"), ("mlflow", "server", "--backend-store-uri"),
        ("dagster", "code-server", "start"), ("dagster-webserver", "-h", "127.0.0.1"), ("dagster-daemon", "run", "-w"),
    ]
    assert all(isinstance(s, Service) and all(isinstance(v, str) for v in s.env.values()) for s in services)
    mlflow = services[1]
    assert {"--serve-artifacts", "--allowed-hosts"} <= set(mlflow.argv)
    assert mlflow.argv[mlflow.argv.index("--artifacts-destination") + 1].startswith("s3://lake/")
    assert json.loads(mlflow.env["MLFLOW_S3_UPLOAD_EXTRA_ARGS"]) == {"ServerSideEncryption": "AES256"}
    assert services[2].ready_url == "grpc://127.0.0.1:4000" and services[4].ready_url is None


def test_the_code_servers_environment_is_read_by_the_projects_settings(monkeypatch):
    from infra import settings

    config = StackConfig(s3_port=9100, mlflow_port=5100)
    code = {s.name: s for s in stack_services(config)}["user-code"]
    for name, value in code.env.items():
        monkeypatch.setenv(name, value)
    lake = settings.lake()
    assert (lake.url, lake.endpoint_url, lake.sse) == ("s3://lake", "http://127.0.0.1:9100", "AES256")
    assert settings.registry().tracking_uri.get_secret_value() == "http://127.0.0.1:5100"
    assert settings.prediction_log().url == "s3://lake/predictions"
    assert code.env["BENTO_EXPORT_URL"] == "s3://lake/bentos/"
    assert (settings.postgres().host, settings.postgres().user) == ("127.0.0.1", "postgres")
    assert code.env["DAGSTER_PG_DB"] == "dagster" and "SENSOR_INTERVAL_S" not in code.env, "production tick by default"


def test_no_secret_is_in_a_services_arguments_or_environment(monkeypatch):
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "canary-pg-5b1f")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "canary-aws-77c2")
    text = json.dumps([[list(s.argv), dict(s.env)] for s in stack_services(StackConfig())])
    assert "canary" not in text
    assert all("PASSWORD" not in name and "SECRET" not in name for s in stack_services(StackConfig()) for name in s.env)


def _default_sigterm() -> None:
    """In the stand-in: SIGTERM delivered and fatal, whatever the test process it forks from inherited
    (in a long xdist worker, stand-ins once outlived SIGTERM for the whole grace period)."""
    import signal

    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _group(root, name) -> int:
    """A stand-in service: a process group of a shell and its own child, as a server and its worker."""
    process = subprocess.Popen(["sh", "-c", "sleep 120 & sleep 120"], start_new_session=True,
                               stdout=subprocess.DEVNULL, preexec_fn=_default_sigterm)
    deadline = time.monotonic() + 10
    while len(group_members(process.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    return process.pid


def _write_state(stack: Stack, pids: dict[str, int]) -> None:
    stack.config.root.mkdir(parents=True, exist_ok=True)
    stack.state_path.write_text(json.dumps({"services": {n: {"pid": p, "log": "", "port": None} for n, p in pids.items()}}))


def test_up_refuses_a_half_running_stack_and_down_leaves_no_process(tmp_path):
    stack = Stack(StackConfig(root=tmp_path / "stack"))
    dead = subprocess.Popen(["true"])
    dead.wait()
    leader = _group(tmp_path, "s3")
    _write_state(stack, {"s3": leader, "mlflow": dead.pid})
    members = group_members(leader)
    assert len(members) >= 2
    with pytest.raises(StackError, match="partly running .*s3.*stack-down"):
        stack.up()

    assert stack.down() == "stopped mlflow, s3"
    assert not [pid for pid in members if process_alive(pid)]
    assert not stack.state_path.exists() and stack.status() == {}


def test_up_on_a_running_stack_changes_nothing(tmp_path):
    stack = Stack(StackConfig(root=tmp_path / "stack"))
    pids = {name: _group(tmp_path, name) for name in stack.services}
    _write_state(stack, pids)
    try:
        assert stack.up().startswith("stack already up")
        assert stack.state() and all(stack.status().values())
    finally:
        stack.down()
    assert not any(process_alive(pid) for pid in pids.values())


def test_missing_postgres_skips_with_what_to_install_and_fails_where_it_is_required():
    reason = postgres_unavailable("127.0.0.1", free_port(), "postgres", "")
    assert reason is not None and "install PostgreSQL" in reason
    with pytest.raises(pytest.skip.Exception, match="install PostgreSQL"):
        postgres_missing(reason, required=False)
    with pytest.raises(pytest.fail.Exception, match="REQUIRE_POSTGRES is set, but no PostgreSQL server"):
        postgres_missing(reason, required=True)


@pytest.mark.parametrize(("value", "required"), [("1", True), ("true", True), ("", False), ("0", False)])
def test_require_postgres_is_read_from_the_environment(monkeypatch, value, required):
    from infra import settings

    monkeypatch.setenv("REQUIRE_POSTGRES", value)
    assert settings.ci().require_postgres is required


def test_the_instance_config_the_stack_writes_passes_dagsters_schema_with_overrides_merged(tmp_path, monkeypatch):
    """deploy/dagster-production.yaml as the stack writes it: Postgres on psycopg2, compute logs in S3 with SSE."""
    import yaml
    # The schema check without building the storage (which would connect to Postgres); not public API.
    from dagster._core.instance.config import dagster_instance_config

    config = StackConfig(root=tmp_path, instance_overrides={"run_monitoring": {"poll_interval_seconds": 5}})
    stack = Stack(config)
    monkeypatch.setattr("pipelines.stack.ensure_databases", lambda _config: [])
    stack._prepare()
    written = yaml.safe_load((config.dagster_home / "dagster.yaml").read_text())
    assert written["run_monitoring"]["poll_interval_seconds"] == 5
    assert written["run_monitoring"]["max_runtime_seconds"] == 43200, "an override keeps the section's other keys"
    resolved, _ = dagster_instance_config(str(config.dagster_home))
    assert resolved["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    logs = resolved["compute_logs"]
    assert logs["class"] == "S3ComputeLogManager" and logs["config"]["upload_extra_args"] == {"ServerSideEncryption": "AES256"}
    assert logs["config"]["bucket"] == {"env": "DAGSTER_COMPUTE_LOGS_BUCKET"}
    assert "DAGSTER_COMPUTE_LOGS_BUCKET" in {s.name: s for s in stack_services(config)}["daemon"].env
