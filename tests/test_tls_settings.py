"""``SERVICE_TLS_*``: BentoML's ``ssl`` configuration of the service, and a clear refusal of a wrong file."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ml import settings
from tests.tls import make_tls_files


@pytest.fixture
def tls(tmp_path, monkeypatch):
    for name in ("SERVICE_TLS_CERTFILE", "SERVICE_TLS_KEYFILE"):
        monkeypatch.delenv(name, raising=False)
    return make_tls_files(tmp_path / "tls")


def test_unset_is_plain_http_and_set_is_https_with_absolute_paths(tls, monkeypatch, tmp_path):
    assert settings.service_ssl_config() == {"enabled": False}
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SERVICE_TLS_CERTFILE", "tls/server.crt")
    assert settings.service_ssl_config() == {"enabled": True, "certfile": str(tls.cert)}, "a combined PEM needs no key file"
    monkeypatch.setenv("SERVICE_TLS_KEYFILE", str(tls.key))
    assert settings.service_ssl_config() == {"enabled": True, "certfile": str(tls.cert), "keyfile": str(tls.key)}


def test_a_key_without_a_certificate_or_a_missing_file_is_refused(tls, monkeypatch):
    monkeypatch.setenv("SERVICE_TLS_KEYFILE", str(tls.key))
    with pytest.raises(ValueError, match="SERVICE_TLS_CERTFILE is not"):
        settings.service_ssl_config()
    monkeypatch.setenv("SERVICE_TLS_CERTFILE", str(tls.cert.with_name("gone.crt")))
    with pytest.raises(ValueError, match=r"SERVICE_TLS_CERTFILE='.*gone.crt': no such file"):
        settings.service_ssl_config()


def test_the_service_does_not_start_on_a_missing_certificate_and_says_which(tls, tmp_path):
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "SERVICE_TLS_CERTFILE": str(tmp_path / "gone.crt")}
    done = subprocess.run([sys.executable, "-c", "import serving.service"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode != 0 and "SERVICE_TLS_CERTFILE=" in done.stderr and "no such file" in done.stderr, done.stderr[-2000:]
    assert "BEGIN" not in done.stderr, "no key or certificate material in the error"
