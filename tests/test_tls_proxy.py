"""``pipelines.tls_proxy`` (a real process) in front of a real HTTP server: HTTPS verified against a throwaway
CA reaches the server, keep-alive and large bodies pass unchanged, plain HTTP on the TLS port is refused."""

from __future__ import annotations

import os
import subprocess
import sys
from http.server import BaseHTTPRequestHandler

import httpx
import pytest

from tests.servers import http_server_in_thread, tls_proxy
from tests.tls import make_tls_files, plain_http_refused, untrusted_client_refused


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def _upstream(seen: list[tuple[str, str, int]]):
    """A keep-alive HTTP/1.1 server: GET answers its path, POST echoes the body; ``seen`` gets (method, path, client port)."""

    class Upstream(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self, body: bytes) -> None:
            seen.append((self.command, self.path, self.client_address[1]))
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):  # noqa: N802
            self._answer(f"upstream {self.path}".encode())

        def do_POST(self):  # noqa: N802
            self._answer(self.rfile.read(int(self.headers["Content-Length"])))

        def log_message(self, *args):
            pass

    return Upstream


def test_https_reaches_the_upstream_and_plain_http_on_the_tls_port_is_refused(tls, tmp_path):
    seen: list[tuple[str, str, int]] = []
    with http_server_in_thread(_upstream(seen)) as port, tls_proxy(port, tls, tmp_path / "proxy.log") as url:
        assert url.startswith("https://")
        seen.clear()
        body = os.urandom(3 << 20)
        with httpx.Client(base_url=url, verify=tls.client_context(), timeout=30) as http:
            assert http.get("/server_info").text == "upstream /server_info"
            for _ in range(3):
                echoed = http.post("/echo", content=body)
                assert echoed.status_code == 200 and echoed.content == body
        assert [m for m, _, _ in seen] == ["GET", "POST", "POST", "POST"]
        assert len({client_port for _, _, client_port in seen}) == 1, "one client connection is one upstream connection"

        before = len(seen)
        print("plain HTTP:", plain_http_refused(url))
        print("untrusted client:", untrusted_client_refused(url))
        assert len(seen) == before, "nothing of a refused client reached the upstream"

        with httpx.Client(base_url=url, verify=tls.client_context(), timeout=30) as http:
            assert http.get("/after").text == "upstream /after", "the proxy serves on after refusing bad clients"


def test_a_missing_certificate_is_a_clear_error(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pipelines.tls_proxy", "--listen", "127.0.0.1:0", "--upstream",
                           "127.0.0.1:1", "--certfile", str(tmp_path / "missing.crt")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "tls_proxy:" in done.stderr and "No such file" in done.stderr, done.stderr
    bad = subprocess.run([sys.executable, "-m", "pipelines.tls_proxy", "--listen", "nowhere", "--upstream", "127.0.0.1:1",
                          "--certfile", "x"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "expected HOST:PORT" in bad.stderr
