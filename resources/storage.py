"""The lake: a local folder by default, any S3 API (through dagster-aws) in production."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import PrivateAttr
from upath import UPath

_TMP_MARK = ".tmp-"


@dataclass(frozen=True)
class StoredObject:
    """An object in the lake: its key, a version that changes when its bytes do, and when."""

    key: str
    version: str  # ETag on S3; mtime and size locally
    modified: float  # seconds since the epoch


class LakeStorage(dg.ConfigurableResource):
    """Object storage for landing files, Parquet partitions, quarantine and reports.

    ``url`` is a local folder (the embedded default) or ``s3://bucket/prefix``. On S3 the client
    comes from dagster-aws' ``S3Resource``; ``endpoint_url`` points it at any S3 API (MinIO, moto)
    and ``sse`` is requested on every put. Credentials come from the standard AWS chain
    (environment, profile, instance role), never from config.
    """

    url: str
    endpoint_url: str | None = None
    region_name: str | None = None
    sse: str | None = "AES256"
    max_attempts: int = 5

    _client: Any = PrivateAttr(default=None)
    _versioning: str | None = PrivateAttr(default=None)

    @property
    def is_s3(self) -> bool:
        return self.url.startswith("s3://")

    def _bucket_and_prefix(self) -> tuple[str, str]:
        bucket, _, prefix = self.url[len("s3://") :].partition("/")
        return bucket, prefix.strip("/")

    def _s3_key(self, key: str) -> str:
        prefix = self._bucket_and_prefix()[1]
        return f"{prefix}/{key}" if prefix else key

    def _local(self, key: str) -> Path:
        return Path(self.url) / key

    def s3_client(self):
        if self._client is None:
            from dagster_aws.s3 import S3Resource

            self._client = S3Resource(
                endpoint_url=self.endpoint_url,
                region_name=self.region_name,
                max_attempts=self.max_attempts,
            ).get_client()
        return self._client

    def uri(self, key: str = "") -> str:
        """A URI for people and for fsspec: ``s3://bucket/prefix/key`` or an absolute path."""
        if self.is_s3:
            return f"s3://{self._bucket_and_prefix()[0]}/{self._s3_key(key)}".rstrip("/")
        return str(self._local(key).resolve())

    def write_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` at ``key`` whole or not at all.

        On S3 one ``put_object`` of the complete bytes (SSE requested): a writer that dies mid-way
        leaves the previous object, never a truncated one. Locally the bytes go to a hidden sibling
        (``.name.tmp-<pid>``, which no lister shows), are synced, then renamed into place; temporaries
        left by killed writers of the same key are removed.
        """
        if self.is_s3:
            extra = {"ServerSideEncryption": self.sse} if self.sse else {}
            self.s3_client().put_object(
                Bucket=self._bucket_and_prefix()[0], Key=self._s3_key(key), Body=data, **extra
            )
            return
        path = self._local(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}{_TMP_MARK}{os.getpid()}")
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _remove_orphaned_temporaries(path)

    def bucket_versioning(self) -> str:
        """Whether the bucket keeps old versions: ``Enabled``, ``Suspended``, ``Disabled``, or why unknown.

        Asked once per resource instance (the answer goes into every write's metadata).
        """
        if self._versioning is None:
            if not self.is_s3:
                self._versioning = "n/a (local folder)"
            else:
                try:
                    answer = self.s3_client().get_bucket_versioning(Bucket=self._bucket_and_prefix()[0])
                    self._versioning = answer.get("Status") or "Disabled"
                except Exception as exc:  # e.g. AccessDenied: report it, never fail a write for it
                    from ml.redaction import redact

                    self._versioning = f"unknown ({redact(type(exc).__name__)}: {redact(exc)[:200]})"
        return self._versioning

    def read_bytes(self, key: str) -> bytes:
        if self.is_s3:
            client = self.s3_client()
            try:
                response = client.get_object(Bucket=self._bucket_and_prefix()[0], Key=self._s3_key(key))
            except client.exceptions.NoSuchKey:
                raise FileNotFoundError(self.uri(key)) from None
            return response["Body"].read()
        return self._local(key).read_bytes()

    def exists(self, key: str) -> bool:
        if self.is_s3:
            try:
                self.s3_client().head_object(Bucket=self._bucket_and_prefix()[0], Key=self._s3_key(key))
            except Exception as exc:  # botocore ClientError 404
                if "404" in str(exc) or "Not Found" in str(exc):
                    return False
                raise
            return True
        return self._local(key).is_file()

    def list(self, prefix: str) -> list[StoredObject]:
        """Every object under ``prefix`` (keys relative to the lake), sorted by key."""
        if self.is_s3:
            bucket, _ = self._bucket_and_prefix()
            strip = len(self._s3_key(""))
            paginator = self.s3_client().get_paginator("list_objects_v2")
            found = []
            for page in paginator.paginate(Bucket=bucket, Prefix=self._s3_key(prefix)):
                for obj in page.get("Contents", []):
                    found.append(
                        StoredObject(
                            key=obj["Key"][strip:],
                            version=obj["ETag"].strip('"'),
                            modified=obj["LastModified"].timestamp(),
                        )
                    )
            return sorted(found, key=lambda o: o.key)
        root = Path(self.url)
        base = self._local(prefix)
        if not base.exists():
            return []
        found = []
        for path in base.rglob("*"):
            if path.is_file() and not path.name.startswith("."):
                stat = path.stat()
                found.append(
                    StoredObject(
                        key=path.relative_to(root).as_posix(),
                        version=f"{stat.st_mtime_ns}-{stat.st_size}",
                        modified=stat.st_mtime,
                    )
                )
        return sorted(found, key=lambda o: o.key)

    def delete(self, key: str) -> None:
        if self.is_s3:
            self.s3_client().delete_object(Bucket=self._bucket_and_prefix()[0], Key=self._s3_key(key))
        else:
            self._local(key).unlink(missing_ok=True)

    def storage_options(self) -> dict[str, Any]:
        """fsspec (s3fs) options that match this resource, SSE included."""
        if not self.is_s3:
            return {}
        options: dict[str, Any] = {}
        if self.endpoint_url:
            options["endpoint_url"] = self.endpoint_url
        if self.region_name:
            options["client_kwargs"] = {"region_name": self.region_name}
        if self.sse:
            options["s3_additional_kwargs"] = {"ServerSideEncryption": self.sse}
        return options

    def upath(self, key: str = "") -> UPath:
        """A universal path to ``key``, for Parquet readers and writers."""
        if self.is_s3:
            return UPath(self.uri(key), **self.storage_options())
        path = self._local(key)
        path.mkdir(parents=True, exist_ok=True)
        return UPath(path.resolve())


def _remove_orphaned_temporaries(path: Path) -> None:
    """Remove ``.name.tmp-<pid>`` siblings of ``path`` whose writer process no longer exists."""
    for tmp in path.parent.glob(f".{path.name}{_TMP_MARK}*"):
        pid = tmp.name.rsplit(_TMP_MARK, 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
