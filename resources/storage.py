"""The lake: a local folder by default, any S3 API (through dagster-aws) in production."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import PrivateAttr
from upath import UPath

from infra.settings import LakeLocation, LakeSettings

_TMP_MARK = ".tmp-"


@dataclass(frozen=True)
class StoredObject:
    """An object in the lake: its key, a version that changes when (and only when) its bytes do.

    ``modified`` is informational: copying tools (``cp -p``, ``rsync -a``, ``tar x``, S3 replication)
    carry old times over, so no decision may rest on it.
    """

    key: str
    version: str  # the ETag on S3; a digest of the bytes locally (see content_version)
    modified: float  # seconds since the epoch
    size: int = 0


class ObjectChanged(RuntimeError):
    """An object no longer holds the version a reader was told to read."""

    def __init__(self, key: str, expected: str, found: str | None):
        self.key, self.expected, self.found = key, expected, found
        now = f"it is now version {found}" if found else "its new version is unknown"
        super().__init__(f"{key} changed since version {expected} was seen ({now})")


def content_version(data: bytes) -> str:
    """The local version of an object: the first 32 hex digits of the SHA-256 of its bytes.

    A digest of the content, not ``st_mtime``/``st_ctime``/size: copying tools preserve mtime, a
    rewrite of the same size within the file system's timestamp granularity keeps ctime, and
    a stat-based version cannot prove which bytes a reader got (the file can change between the
    stat and the read). A digest names exactly the bytes read, so an ingestion run can check it
    read the version its run key names, and rewriting identical bytes is (rightly) no change.
    The price is reading every listed file: 0.06 s for a year of landing files here (729 files,
    33 MB, warm page cache; docs/reliability-notes/landing.md); on S3 the ETag is free.
    """
    return hashlib.sha256(data).hexdigest()[:32]


class LakeArea(StrEnum):
    """The lake's areas beside the warehouse and landing (`ml/landing.py`, the producers' contract); paths in them are built here (`LakeStorage.area_key`), never in assets."""

    QUARANTINE = "quarantine"
    DRIFT_REPORTS = "monitoring/drift"


class LakeStorage(LakeLocation, dg.ConfigurableResource):
    """Object storage for landing files, Parquet partitions, quarantine and reports.

    Its fields are the lake's (``LakeLocation``, declared once in ``infra/settings.py``): ``url`` is a
    local folder (the embedded default) or ``s3://bucket/prefix``. On S3 the client comes from
    dagster-aws' ``S3Resource``; ``endpoint_url`` points it at any S3 API (MinIO, moto) and ``sse`` is
    requested on every put. Credentials come from the standard AWS chain (environment, profile,
    instance role), never from config.
    """

    _client: Any = PrivateAttr(default=None)
    _versioning: str | None = PrivateAttr(default=None)

    @classmethod
    def from_settings(cls, lake: LakeLocation) -> LakeStorage:
        return cls(**lake.location())

    def settings(self) -> LakeSettings:
        """This lake as one plain value: what Dask workers and fsspec readers are given, never the resource.

        Built from the resource's values alone (``model_construct``): the environment is not read again.
        """
        return LakeSettings.model_construct(**self.location())

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

    @staticmethod
    def area_key(area: LakeArea, *parts: str) -> str:
        """The key of ``parts`` inside ``area``: ``area_key(LakeArea.QUARANTINE, "flights", day)``."""
        return "/".join([area.value, *(p.strip("/") for p in parts if p)])

    def write_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` at ``key`` whole or not at all.

        On S3 one ``put_object`` of the complete bytes (SSE requested): a writer that dies mid-way
        leaves the previous object, never a truncated one. Locally the bytes go to a hidden sibling
        (``.name.tmp-<pid>``, which no lister shows), are synced, then renamed into place; temporaries
        left by killed writers of the same key are removed.
        """
        if self.is_s3:
            self.s3_client().put_object(
                Bucket=self._bucket_and_prefix()[0], Key=self._s3_key(key), Body=data, **self.sse_arguments()
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
                    from infra.redaction import redact

                    self._versioning = f"unknown ({redact(type(exc).__name__)}: {redact(exc)[:200]})"
        return self._versioning

    def read_bytes(self, key: str) -> bytes:
        return self.read_versioned(key)[0]

    def read_versioned(self, key: str, expected_version: str | None = None) -> tuple[bytes, str]:
        """The object's bytes and their version; ``ObjectChanged`` unless it is ``expected_version``.

        On S3 the read is a conditional GET (``IfMatch`` on the ETag), so the bytes returned are
        exactly that version or nothing; locally the digest of the bytes read is compared.
        """
        if self.is_s3:
            from botocore.exceptions import ClientError

            client = self.s3_client()
            conditions = {"IfMatch": f'"{expected_version}"'} if expected_version else {}
            try:
                response = client.get_object(
                    Bucket=self._bucket_and_prefix()[0], Key=self._s3_key(key), **conditions
                )
            except client.exceptions.NoSuchKey:
                raise FileNotFoundError(self.uri(key)) from None
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("PreconditionFailed", "412"):
                    raise
                raise ObjectChanged(self.uri(key), expected_version, self._etag(key)) from None
            return response["Body"].read(), response["ETag"].strip('"')
        data = self._local(key).read_bytes()
        version = content_version(data)
        if expected_version and version != expected_version:
            raise ObjectChanged(self.uri(key), expected_version, version)
        return data, version

    def _etag(self, key: str) -> str | None:
        try:
            head = self.s3_client().head_object(Bucket=self._bucket_and_prefix()[0], Key=self._s3_key(key))
        except Exception:  # gone meanwhile: the message says the version is unknown
            return None
        return head["ETag"].strip('"')

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
        """Every object under ``prefix`` (keys relative to the lake), sorted by key.

        Versions are ETags on S3 and ``content_version`` digests locally (each file is read).
        """
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
                            size=int(obj.get("Size", 0)),
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
                try:
                    stat = path.stat()
                    data = path.read_bytes()
                except FileNotFoundError:  # removed or replaced between the walk and the read
                    continue
                found.append(
                    StoredObject(
                        key=path.relative_to(root).as_posix(),
                        version=content_version(data),
                        modified=stat.st_mtime,
                        size=len(data),
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
        return self.fsspec_options()

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
