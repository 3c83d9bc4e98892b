"""The production stack's servers over TLS (``STACK_TLS_CERTFILE``/``KEYFILE``): the service list the stack
runs, a real ``mlflow server`` on its own uvicorn TLS options with the MLflow client verifying a throwaway
CA, and the real Dagster webserver, started with the stack's arguments, behind ``pipelines.tls_proxy``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from pipelines.stack import WORKSPACE, StackConfig, graphql, stack_services
from tests.servers import free_port, mlflow_server, running_server
from tests.tls import make_tls_files, plain_http_refused, untrusted_client_refused

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def _config(tls, **ports) -> StackConfig:
    return StackConfig(tls_certfile=str(tls.cert), tls_keyfile=str(tls.key), tls_cafile=str(tls.ca), **ports)


def test_with_tls_mlflow_serves_https_and_the_webserver_sits_on_loopback_behind_the_proxy(tls):
    config = _config(tls)
    services = {s.name: s for s in stack_services(config)}
    assert list(services) == ["s3", "mlflow", "user-code", "webserver", "webserver-tls", "daemon"]
    mlflow = services["mlflow"].argv
    assert mlflow[mlflow.index("--uvicorn-opts") + 1] == f"--ssl-certfile {tls.cert} --ssl-keyfile {tls.key}"
    assert services["mlflow"].ready_url == "https://127.0.0.1:5000/health"

    webserver, proxy = services["webserver"], services["webserver-tls"]
    assert webserver.argv[:5] == ("dagster-webserver", "-h", "127.0.0.1", "-p", "3080"), "plain HTTP on loopback only"
    assert proxy.port == 3000 and proxy.ready_url == "https://127.0.0.1:3000/server_info"
    assert proxy.argv[proxy.argv.index("--upstream") + 1] == "127.0.0.1:3080"
    assert proxy.argv[proxy.argv.index("--listen") + 1] == "127.0.0.1:3000"

    code = services["user-code"].env
    assert code["MLFLOW_TRACKING_URI"] == "https://127.0.0.1:5000"
    assert code["MLFLOW_TRACKING_SERVER_CERT_PATH"] == str(tls.ca)
    assert config.webserver_url == "https://127.0.0.1:3000" and config.webserver_upstream_url == "http://127.0.0.1:3080"


def test_without_tls_the_stack_is_unchanged_and_half_a_pair_or_a_missing_file_is_refused(tls, monkeypatch):
    for name in ("STACK_TLS_CERTFILE", "STACK_TLS_KEYFILE", "STACK_TLS_CAFILE"):
        monkeypatch.delenv(name, raising=False)
    plain = stack_services(StackConfig())
    assert [s.name for s in plain] == ["s3", "mlflow", "user-code", "webserver", "daemon"]
    assert all("--uvicorn-opts" not in s.argv for s in plain) and "MLFLOW_TRACKING_SERVER_CERT_PATH" not in plain[2].env
    assert StackConfig().mlflow_url.startswith("http://") and StackConfig().client_context() is None

    monkeypatch.setenv("STACK_TLS_CERTFILE", str(tls.cert))
    with pytest.raises(ValueError, match="both STACK_TLS_CERTFILE and STACK_TLS_KEYFILE"):
        StackConfig()
    monkeypatch.setenv("STACK_TLS_KEYFILE", str(tls.key.with_name("nope.key")))
    with pytest.raises(ValueError, match="STACK_TLS_KEYFILE=.*no such file"):
        StackConfig()
    monkeypatch.setenv("STACK_TLS_KEYFILE", str(tls.key))
    assert StackConfig().tls and StackConfig().client_context() is not None


@pytest.mark.slow
def test_mlflow_over_its_own_tls_options_with_the_client_verifying_the_ca(tls, tmp_path, monkeypatch):
    import mlflow

    with mlflow_server(tmp_path / "mlflow", tls=tls) as url:
        assert url.startswith("https://")
        monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(tls.ca))
        client = mlflow.MlflowClient(tracking_uri=url)
        experiment = client.create_experiment("over-tls")
        run = client.create_run(experiment)
        client.log_metric(run.info.run_id, "auc", 0.71)
        assert client.get_run(run.info.run_id).data.metrics == {"auc": 0.71}
        plain_http_refused(url)
        untrusted_client_refused(f"{url}/health")


@pytest.mark.slow
def test_the_webserver_behind_the_proxy_answers_graphql_over_https_only(tls, tmp_path):
    """The webserver and the proxy run with the arguments the stack gives them (the code location stays
    unloaded: no code server here; the webserver serves its API all the same)."""
    config = _config(tls, webserver_port=free_port(), webserver_internal_port=free_port(),
                     code_server_port=free_port(), root=tmp_path / "stack")
    services = {s.name: s for s in stack_services(config)}
    webserver, proxy = services["webserver"], services["webserver-tls"]
    assert webserver.argv[-1] == WORKSPACE
    env = {**os.environ, **webserver.env, "DAGSTER_HOME": str(tmp_path / "home")}
    (tmp_path / "home").mkdir()
    bin_dir = Path(sys.executable).parent
    with running_server([str(bin_dir / webserver.argv[0]), *webserver.argv[1:]], webserver.ready_url,
                        tmp_path / "webserver.log", timeout_s=120, env=env, cwd=ROOT), \
         running_server([sys.executable, *proxy.argv[1:]], proxy.ready_url, tmp_path / "proxy.log", timeout_s=60,
                        cwd=ROOT, ssl_context=config.client_context()):
        data = graphql(config.webserver_url, "{ version }", context=config.client_context())
        assert data["version"], data
        _graphql_websocket_handshake(config.webserver_url.replace("https://", "wss://") + "/graphql",
                                     config.client_context())
        plain_http_refused(config.webserver_url)
        untrusted_client_refused(f"{config.webserver_url}/server_info")


def _graphql_websocket_handshake(url: str, context) -> None:
    """The UI's subscription channel (a WebSocket, graphql-ws) opens through the proxy and answers."""
    import json

    from websockets.sync.client import connect

    with connect(url, ssl=context, subprotocols=["graphql-ws"], open_timeout=30) as socket:
        assert socket.subprotocol == "graphql-ws"
        socket.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert json.loads(socket.recv(timeout=30)) == {"type": "connection_ack"}
