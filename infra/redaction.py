"""Secrets out of text: credentials in URLs, tokens in query strings and headers.

Everything that may reach a log, metadata, a report or an alert goes through ``redact`` first.
Framework-free so the service, the sensors and the assets share one rule.
"""

from __future__ import annotations

import re

MASK = "***"

_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/\s@'\"]+)@")
_SECRET_QUERY = re.compile(
    r"(?P<key>[?&;](?:[A-Za-z0-9_\-]*(?:token|secret|password|passwd|pwd|key|signature|sig|credential|auth)"
    r"[A-Za-z0-9_\-]*))=(?P<value>[^&\s'\"#]+)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?P<kind>\b(?:Bearer|Basic|Token)\s+)[A-Za-z0-9._~+/=\-]{6,}", re.IGNORECASE)
_AWS_SECRET = re.compile(r"(?P<key>aws_secret_access_key|aws_session_token)(?P<sep>\s*[=:]\s*)\S+", re.IGNORECASE)
_SECRET_ASSIGNMENT = re.compile(
    r"(?P<key>\b[A-Za-z0-9_\-]*(?:token|secret|password|passwd|pwd|api_?key|access_key|credential)s?"
    r"[\"']?\s*[=:]\s*[\"']?)(?P<value>[^\s\"',&}]+)",
    re.IGNORECASE,
)
_WEBHOOK_PATH = re.compile(r"(?P<base>https?://(?:hooks\.slack\.com/(?:services|workflows|triggers)|[^/\s]*webhook[^/\s]*)/)[^\s'\"]+",
                           re.IGNORECASE)


def redact(text: object) -> str:
    """``text`` with URL credentials, secret query parameters, bearer tokens, ``key=value`` secrets and
    webhook paths (a Slack webhook's path is its credential) masked."""
    out = str(text)
    out = _WEBHOOK_PATH.sub(lambda m: f"{m['base']}{MASK}", out)
    out = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", out)
    out = _SECRET_QUERY.sub(lambda m: f"{m['key']}={MASK}", out)
    out = _BEARER.sub(lambda m: f"{m['kind']}{MASK}", out)
    out = _AWS_SECRET.sub(lambda m: f"{m['key']}{m['sep']}{MASK}", out)
    out = _SECRET_ASSIGNMENT.sub(lambda m: m["key"] + (m["value"] if m["value"] == MASK else MASK), out)
    return out
