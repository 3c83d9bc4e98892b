"""Real server processes on 127.0.0.1 for integration tests: a moto S3 server and `mlflow server`."""

import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serving(command: list[str], ready_url: str, log: Path, timeout_s: float = 90):
    """Start ``command``, wait until ``ready_url`` answers, and stop the process afterwards."""
    with open(log, "w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                urllib.request.urlopen(ready_url, timeout=2)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{command[:4]} did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.2)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


@contextlib.contextmanager
def moto_server(root: Path):
    """Yield the endpoint URL of a moto S3 server."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with serving(command, f"{endpoint}/moto-api/", root / "moto.log", timeout_s=30):
        yield endpoint


@contextlib.contextmanager
def mlflow_server(root: Path):
    """Yield the URL of an `mlflow server` with a SQLite store and proxied artifacts under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]
    with serving(command, f"{url}/health", root / "server.log"):
        yield url
