"""Real servers on 127.0.0.1 for integration tests: a moto S3 server, `mlflow server`, a webhook receiver."""

import contextlib
import json
import os
import sys
from pathlib import Path

from resources.processes import free_port, running_server

__all__ = ["free_port", "running_server", "moto_server", "mlflow_server", "webhook_receiver", "http_server_in_thread",
           "tls_proxy"]


@contextlib.contextmanager
def moto_server(root: Path):
    """Yield the endpoint URL of a moto S3 server."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with running_server(command, f"{endpoint}/moto-api/", root / "moto.log", timeout_s=30):
        yield endpoint


@contextlib.contextmanager
def mlflow_server(root: Path, s3_destination: str | None = None, s3_endpoint: str | None = None, sse: str = "AES256",
                  tls=None):
    """Yield the URL of an `mlflow server` with a SQLite store and proxied artifacts under ``root``.

    With ``s3_destination`` (``s3://bucket/prefix``) the server keeps artifacts there, on the S3 API at
    ``s3_endpoint``, asking for server-side encryption ``sse`` on every upload, as a production
    server is configured (``MLFLOW_S3_UPLOAD_EXTRA_ARGS``). With ``tls`` (``tests.tls.TlsFiles``) it
    serves HTTPS only, through its uvicorn's own TLS options, as the stack starts it.
    """
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", s3_destination or str(root / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]
    if tls:
        from pipelines.stack import mlflow_tls_options

        command += ["--uvicorn-opts", mlflow_tls_options(str(tls.cert), str(tls.key))]
    from pipelines.stack import MLFLOW_SERVER_ENV

    env = {**os.environ, **MLFLOW_SERVER_ENV}
    if s3_destination:
        env.update({
            "MLFLOW_S3_ENDPOINT_URL": s3_endpoint or "",
            "MLFLOW_S3_UPLOAD_EXTRA_ARGS": json.dumps({"ServerSideEncryption": sse}),
        })
    with running_server(command, f"{url}/health", root / "server.log", env=env,
                        ssl_context=tls.client_context() if tls else None):
        yield url


@contextlib.contextmanager
def tls_proxy(upstream_port: int, tls, log: Path, ready_path: str = "/"):
    """Yield the https:// URL of ``pipelines.tls_proxy`` (a real process) in front of 127.0.0.1:``upstream_port``,
    serving ``tls`` (``tests.tls.TlsFiles``); ready once a request through it is answered 2xx at ``ready_path``."""
    port = free_port()
    command = [sys.executable, "-m", "pipelines.tls_proxy", "--listen", f"127.0.0.1:{port}",
               "--upstream", f"127.0.0.1:{upstream_port}", "--certfile", str(tls.cert), "--keyfile", str(tls.key)]
    url = f"https://127.0.0.1:{port}"
    with running_server(command, f"{url}{ready_path}", log, timeout_s=60, ssl_context=tls.client_context(),
                        cwd=Path(__file__).resolve().parents[1]):
        yield url


@contextlib.contextmanager
def webhook_receiver(path: str = "/hook"):
    """Yield the URL of a local HTTP server (answering 204) and the list of raw bodies POSTed to it."""
    from http.server import BaseHTTPRequestHandler

    received: list[bytes] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    with http_server_in_thread(Hook) as port:
        yield f"http://127.0.0.1:{port}{path}", received


@contextlib.contextmanager
def http_server_in_thread(handler):
    """Serve ``handler`` (a ``BaseHTTPRequestHandler`` class) on 127.0.0.1 from a thread; yield its port."""
    import threading
    from http.server import ThreadingHTTPServer

    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def fresh_postgres_databases(server: dict, *stems: str):
    """Yield new, uniquely named databases (one per stem) on ``server``; dropped afterwards, connections and all."""
    import uuid

    import psycopg2
    from psycopg2 import sql

    from infra import settings

    suffix = uuid.uuid4().hex[:8]
    names = [f"test_{stem}_{suffix}" for stem in stems]

    def execute(statement) -> None:
        connection = psycopg2.connect(**server, password=settings.postgres().password.get_secret_value(), dbname="postgres")
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute(statement)
        finally:
            connection.close()

    for name in names:
        execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield names
    finally:
        for name in names:
            execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


__all__ += ["fresh_postgres_databases"]


def wait_until(predicate, what: str, timeout_s: float, diagnostics=None, interval_s: float = 0.2):
    """``predicate()``'s first truthy value, polled every ``interval_s``; a test failure naming ``what``
    (and, when given, ``diagnostics()``: the logs that say why) after ``timeout_s``."""
    import time

    import pytest

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    pytest.fail(f"{what}: not within {timeout_s:.0f} s" + (f"\n{diagnostics()}" if diagnostics else ""))
