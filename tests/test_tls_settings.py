"""``SERVICE_TLS_*``: BentoML's ``ssl`` configuration of the service, and a clear refusal of a wrong file."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from infra import settings
from tests.tls import make_tls_files


@pytest.fixture
def tls(tmp_path, monkeypatch):
    for name in ("SERVICE_TLS_CERTFILE", "SERVICE_TLS_KEYFILE"):
        monkeypatch.delenv(name, raising=False)
    return make_tls_files(tmp_path / "tls")


def test_unset_is_plain_http_and_set_is_https_with_absolute_paths(tls, monkeypatch, tmp_path):
    assert settings.serving().ssl_config() == {"enabled": False}
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SERVICE_TLS_CERTFILE", "tls/server.crt")
    assert settings.serving().ssl_config() == {"enabled": True, "certfile": str(tls.cert)}, "a combined PEM needs no key file"
    monkeypatch.setenv("SERVICE_TLS_KEYFILE", str(tls.key))
    assert settings.serving().ssl_config() == {"enabled": True, "certfile": str(tls.cert), "keyfile": str(tls.key)}


def test_a_key_without_a_certificate_or_a_missing_file_is_refused(tls, monkeypatch):
    monkeypatch.setenv("SERVICE_TLS_KEYFILE", str(tls.key))
    with pytest.raises(ValueError, match="SERVICE_TLS_CERTFILE is not"):
        settings.serving().ssl_config()
    monkeypatch.setenv("SERVICE_TLS_CERTFILE", str(tls.cert.with_name("gone.crt")))
    with pytest.raises(ValueError, match=r"SERVICE_TLS_CERTFILE='.*gone.crt': no such file"):
        settings.serving().ssl_config()


@pytest.mark.server  # bentoml serve
def test_the_service_does_not_start_on_a_missing_certificate_and_says_which(tls, tmp_path):
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "SERVICE_TLS_CERTFILE": str(tmp_path / "gone.crt")}
    done = subprocess.run([sys.executable, "-c", "import serving.service"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode != 0 and "SERVICE_TLS_CERTFILE=" in done.stderr and "no such file" in done.stderr, done.stderr[-2000:]
    assert "BEGIN" not in done.stderr, "no key or certificate material in the error"


def _make_serve(tmp_path, **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """``make serve`` with a virtualenv whose ``flightdelay`` names a Bento and whose ``bentoml`` records its arguments."""
    import shutil
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    args_file = tmp_path / "bentoml-args"
    (bin_dir / "flightdelay").write_text('#!/bin/sh\n[ "$1" = verified-bento ] && echo flight_delay_service:v1\n')
    (bin_dir / "bentoml").write_text(f'#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done > "{args_file}"\n')
    for program in bin_dir.iterdir():
        program.chmod(0o755)
    stamp = tmp_path / "venv" / ".installed"
    stamp.touch()  # newer than pyproject.toml: make installs nothing
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SERVICE_", "MAKE"))}
    done = subprocess.run([shutil.which("make"), "-s", "-C", str(root), "serve", f"VENV={tmp_path / 'venv'}",
                           f"STAMP={stamp}"], env={**base, "SERVICE_API_TOKEN": "t", **env},
                          capture_output=True, text=True, timeout=60)
    return done, args_file.read_text().splitlines() if args_file.exists() else []


def test_make_serve_hands_the_tls_files_to_bentoml_serve(tls, tmp_path):
    import shutil

    spaced = tmp_path / "my certs"
    spaced.mkdir()
    cert, key = shutil.copy(tls.cert, spaced), shutil.copy(tls.key, spaced)
    done, args = _make_serve(tmp_path, SERVICE_TLS_CERTFILE=str(cert), SERVICE_TLS_KEYFILE=str(key))
    assert done.returncode == 0, done.stderr
    assert args == ["serve", "flight_delay_service:v1", "--host", "127.0.0.1", "-p", "3001",
                    "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]

    done, args = _make_serve(tmp_path)
    assert done.returncode == 0 and args == ["serve", "flight_delay_service:v1", "--host", "127.0.0.1", "-p", "3001"]

    (tmp_path / "bentoml-args").unlink()
    done, args = _make_serve(tmp_path, SERVICE_TLS_KEYFILE=str(key))
    assert done.returncode == 2 and "SERVICE_TLS_CERTFILE is not" in done.stderr and args == []
