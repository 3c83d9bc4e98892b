"""Compose's TLS layer (deploy/compose/compose.tls.yaml) runs what the one-box stack runs with
``STACK_TLS_*`` set: the same programs and flags (MLflow's TLS options, the proxy before the webserver),
the proxy on the webserver's port, the MLflow client's CA, and every TLS file from the mounted folder.
Compose merges a layer into compose.yaml key by key; ``merged`` does the same for the keys used here."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from tests.test_compose_matches_stack import (CONTAINER_ONLY_FLAGS, COMPOSE_DIR, command_shape, container_env_names,
                                              container_ports, flag_value)

TLS_MOUNT = "/run/tls"


class _Reset:
    """Compose's ``!reset`` tag: the layer empties what the base file set."""


class _ComposeLoader(yaml.SafeLoader):
    pass


_ComposeLoader.add_constructor("!reset", lambda loader, node: _Reset())


def _load(name: str) -> dict:
    return yaml.load((COMPOSE_DIR / name).read_text(), Loader=_ComposeLoader)  # noqa: S506 (a SafeLoader)


def merged_document() -> dict:
    """compose.yaml with compose.tls.yaml layered on: mappings merged, ``command`` replaced, lists appended,
    ``!reset`` emptied (compose's merge rules for these keys)."""
    document = _load("compose.yaml")
    base, layer = document["services"], _load("compose.tls.yaml")["services"]
    out = {name: dict(service) for name, service in base.items()}
    for name, service in layer.items():
        target = out.setdefault(name, {})
        for key, value in service.items():
            if isinstance(value, _Reset):
                target[key] = []
            elif key in ("environment", "healthcheck") and isinstance(target.get(key), dict):
                target[key] = {**target[key], **value}
            elif key in ("volumes", "ports") and isinstance(target.get(key), list):
                target[key] = [*target[key], *value]
            else:
                target[key] = value
    return {**document, "services": out}


def merged() -> dict:
    return merged_document()["services"]


def test_the_layered_file_matches_the_compose_specification(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "compose.merged.yaml"
    path.write_text(yaml.safe_dump(merged_document(), sort_keys=False))
    checker = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run([str(checker), "--builtin-schema", "vendor.compose-spec", str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_certificates_folder_is_required_and_comes_from_outside_the_repository():
    source = yaml.safe_load((COMPOSE_DIR / "compose.tls.yaml").read_text().replace("!reset", ""))["x-tls-files"]["source"]
    assert source.startswith("${TLS_DIR:?"), source


@pytest.fixture(scope="module")
def stack_tls(tmp_path_factory):
    from pipelines.stack import StackConfig, stack_services
    from tests.tls import make_tls_files

    tls = make_tls_files(tmp_path_factory.mktemp("tls"))
    config = StackConfig(tls_certfile=str(tls.cert), tls_keyfile=str(tls.key), tls_cafile=str(tls.ca))
    return {s.name: s for s in stack_services(config)}


def _shape(argv):
    """``command_shape`` with ``--uvicorn-opts``' value (which starts with a dash itself) left out."""
    argv = [str(a) for a in argv]
    if "--uvicorn-opts" in argv:
        at = argv.index("--uvicorn-opts")
        argv = argv[:at + 1] + argv[at + 2:]
    return command_shape(argv)


def _mounts_tls(service: dict) -> bool:
    return any(isinstance(v, dict) and v.get("target") == TLS_MOUNT for v in service.get("volumes", []))


@pytest.mark.parametrize("name", ["mlflow", "webserver-tls"])
def test_the_tls_servers_run_the_stacks_program_with_the_same_flags(stack_tls, name):
    compose = merged()[name]
    stack_program, stack_flags = _shape(stack_tls[name].argv)
    compose_program, compose_flags = _shape(compose["command"])
    assert compose_program == stack_program
    assert stack_flags ^ (compose_flags - CONTAINER_ONLY_FLAGS.get(name, set())) == set()
    assert stack_tls[name].port in container_ports(compose), f"{name} listens on the stack's port"
    assert _mounts_tls(compose), f"{name} reads its certificate from {TLS_MOUNT}"


def test_mlflow_and_the_proxy_name_certificate_files_from_the_mount_and_clients_trust_the_ca(stack_tls):
    services = merged()
    mlflow_opts = shlex.split(flag_value(services["mlflow"]["command"], "--uvicorn-opts"))
    proxy = services["webserver-tls"]["command"]
    files = [mlflow_opts[mlflow_opts.index("--ssl-certfile") + 1], mlflow_opts[mlflow_opts.index("--ssl-keyfile") + 1],
             flag_value(proxy, "--certfile"), flag_value(proxy, "--keyfile"),
             services["bento"]["environment"]["SERVICE_TLS_CERTFILE"], services["bento"]["environment"]["SERVICE_TLS_KEYFILE"]]
    assert all(f.startswith(f"{TLS_MOUNT}/") for f in files), files
    assert _mounts_tls(services["bento"])

    for name in ("user-code", "user-code-gpu"):
        env = services[name]["environment"]
        assert set(stack_tls["user-code"].env) <= container_env_names(services[name])
        assert env["MLFLOW_TRACKING_URI"].startswith("https://") and env["MLFLOW_TRACKING_SERVER_CERT_PATH"].startswith(TLS_MOUNT)
        assert _mounts_tls(services[name])
    for name in ("mlflow", "webserver-tls", "bento"):
        probe = " ".join(services[name]["healthcheck"]["test"])
        assert "https://" in probe and f"{TLS_MOUNT}/ca.crt" in probe, (name, probe)


def test_the_plain_webserver_publishes_no_port_and_the_proxy_reaches_it_on_the_compose_network():
    services = merged()
    assert services["webserver"]["ports"] == []
    assert flag_value(services["webserver-tls"]["command"], "--upstream") == "webserver:3000"
    assert "webserver" in services["webserver-tls"]["depends_on"]


def test_prometheus_scrapes_the_same_jobs_over_https():
    plain = {job["job_name"]: job for job in yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())["scrape_configs"]}
    tls = {job["job_name"]: job for job in yaml.safe_load((COMPOSE_DIR / "prometheus.tls.yml").read_text())["scrape_configs"]}
    assert set(tls) == set(plain), "prometheus.tls.yml has prometheus.yml's jobs (add a new job to both)"
    for name, job in tls.items():
        if job.get("scheme") == "https":
            assert job["tls_config"] == {"ca_file": f"{TLS_MOUNT}/ca.crt"}, name
        assert {k: v for k, v in job.items() if k not in ("scheme", "tls_config")} == plain[name], name
    assert {tls["flight-delay-service"]["scheme"], tls["mlflow"]["scheme"]} == {"https"}
    assert Path(COMPOSE_DIR / "prometheus.tls.yml").name in " ".join(merged()["prometheus"]["command"])
