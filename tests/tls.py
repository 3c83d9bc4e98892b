"""A throwaway certificate authority and server certificate for tests that speak TLS (``cryptography``).

Clients verify the server against the CA (``client_context``), never with verification turned off:
a test over HTTPS proves the certificate, the key and the host name fit together as a client checks them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the CA's certificate (what clients trust), the server's certificate and its key."""

    ca: Path
    cert: Path
    key: Path

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts this CA only, checks the host name, and holds the certificates to
        RFC 5280 strictly (Python 3.13's default: key usage on the CA, key identifiers)."""
        context = ssl.create_default_context(cafile=str(self.ca))
        context.verify_flags |= ssl.VERIFY_X509_STRICT
        return context


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_tls_files(folder: Path, hosts: tuple[str, ...] = HOSTS, ca_name: str = "flight-delay test CA") -> TlsFiles:
    """A new CA and a server certificate for ``hosts`` (IP addresses or DNS names) it signed, under ``folder``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    ca_key, server_key = _key(), _key()
    ca_subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_subject).issuer_name(ca_subject)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    names = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_subject).public_key(server_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(ca=folder / "ca.crt", cert=folder / "server.crt", key=folder / "server.key")
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    files.key.touch(mode=0o600)
    files.key.write_bytes(_pem_key(server_key))
    return files


def plain_http_refused(url: str) -> str:
    """Send a plain-HTTP request to ``url``'s TLS port; the transport error that ended it (an AssertionError
    if a plain-HTTP answer came back)."""
    import httpx

    plain = url.replace("https://", "http://", 1)
    try:
        response = httpx.get(plain, timeout=10)
    except httpx.TransportError as error:
        return type(error).__name__
    raise AssertionError(f"plain HTTP to the TLS port {plain} was answered: {response.status_code} {response.text[:200]}")


def untrusted_client_refused(url: str) -> str:
    """Call ``url`` trusting only the system's CAs (not the test CA); the certificate error that ended it."""
    import httpx

    try:
        response = httpx.get(url, timeout=10, verify=ssl.create_default_context())
    except httpx.ConnectError as error:
        assert "CERTIFICATE_VERIFY_FAILED" in str(error), error
        return str(error)
    raise AssertionError(f"a client without the test CA was answered: {response.status_code}")
