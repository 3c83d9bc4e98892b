"""Where the embedded defaults live, and the environment variables that move them to production."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """The project's data folder (``DATA_DIR``; default ``./data`` in the repository)."""
    return Path(os.environ.get("DATA_DIR") or PROJECT_ROOT / "data").resolve()


def lake_url() -> str:
    """``LAKE_URL``: ``s3://bucket/prefix`` in production; a local folder under the data dir by default."""
    return os.environ.get("LAKE_URL") or str(data_dir() / "lake")


def s3_endpoint_url() -> str | None:
    """``AWS_ENDPOINT_URL``: any S3 API (MinIO, moto, Ceph); unset for AWS itself."""
    return os.environ.get("AWS_ENDPOINT_URL") or None


def s3_region() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


def s3_sse() -> str | None:
    """``LAKE_SSE``: the server-side encryption requested on every put (``AES256`` unless set; ``none`` turns it off)."""
    value = os.environ.get("LAKE_SSE", "AES256")
    return None if value.lower() in {"", "none", "off"} else value
