"""Serving: where Bentos are built and kept (BentoML's home) and how a built Bento is served."""

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from infra import settings
from resources.processes import free_port, run_bounded, running_server
from resources.storage import LakeStorage

if TYPE_CHECKING:
    import pandas as pd

    from ml.model import ModelUnit
    from serving.parity import ParityReport


@dataclass(frozen=True)
class ServedBento:
    """A Bento being served: its base URL and the bearer token its clients must send."""

    url: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass(frozen=True)
class BuiltBento:
    """A Bento just built (``serving/build.py``): its tag, the BentoML model packed in it, its size and folder."""

    bento_tag: str
    model_tag: str
    size_bytes: int
    path: str


@dataclass(frozen=True)
class ExportedBento:
    """A Bento archive in the release location: where it is, and the SHA-256 and size of its bytes."""

    uri: str
    sha256: str
    size_bytes: int


def release_file_name(bento_tag: str) -> str:
    """``flight_delay_service:abc123`` → ``flight_delay_service-abc123.bento``: one object per Bento, never overwritten by another."""
    name, _, version = bento_tag.partition(":")
    if not name or not version:
        raise ValueError(f"{bento_tag!r} is not a Bento tag (name:version); pass the tag a `bento` run recorded")
    return f"{name}-{version}.bento"


def image_reference(bento_tag: str, repository: str | None) -> str:
    """The image ``bentoml containerize`` tags for this Bento, in ``repository`` when one is given.

    Containerize names the image after the Bento (``name:version``); pushed to a registry it is
    ``<repository>:<version>``. The version is BentoML's, unique per build, so a rollout always
    changes the image reference (never a mutable ``latest``).
    """
    name, _, version = bento_tag.partition(":")
    return f"{repository.rstrip('/')}:{version}" if repository else f"{name}:{version}"


class BentoStore(dg.ConfigurableResource):
    """BentoML's model and Bento stores (``bentoml_home``) and the prediction log the service writes.

    BentoML resolves its home once per process, so builds and servers run as subprocesses with
    ``BENTOML_HOME`` set: the Dagster process never imports bentoml. Every subprocess dies with the
    process that started it and has a time limit.
    """

    bentoml_home: str
    prediction_log_url: str
    python: str = sys.executable
    build_timeout_s: int = 900
    command_timeout_s: int = 120
    export_url: str | None = Field(default_factory=lambda: settings.release().export_url)
    """Where verified Bentos are exported (``s3://bucket/prefix`` or a folder); ``BENTO_EXPORT_URL`` unless given."""
    image_repository: str | None = Field(default_factory=lambda: settings.release().image_repository)
    """The registry repository of the service's images; ``BENTO_IMAGE_REPOSITORY`` unless given."""

    def env(self, **overrides: str) -> dict[str, str]:
        return {
            **os.environ,
            "BENTOML_HOME": self.bentoml_home,
            "BENTOML_DO_NOT_TRACK": "true",
            "PREDICTION_LOG_URL": self.prediction_log_url,
            **overrides,
        }

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """One build-check-prune at a time per BentoML home (a file lock the kernel drops if its holder dies)."""
        Path(self.bentoml_home).mkdir(parents=True, exist_ok=True)
        with open(Path(self.bentoml_home) / ".bento.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def build(self, unit_dir: Path, unit_sha256: str, model_version: str, run_id: str, model_uri: str) -> BuiltBento:
        """Verify the unit, save it as a BentoML model and build the Bento (``serving/build.py``)."""
        command = [
            self.python, "-m", "serving.build", "--unit", str(unit_dir), "--unit-sha256", unit_sha256,
            "--model-version", model_version, "--run-id", run_id, "--model-uri", model_uri,
        ]
        done = run_bounded(command, self.build_timeout_s, "bento build", env=self.env(), cwd=_project_root())
        if done.returncode != 0:
            raise RuntimeError(f"bento build failed (exit {done.returncode}): {done.stderr[-3000:]}")
        return BuiltBento(**json.loads(done.stdout.strip().splitlines()[-1]))

    def delete(self, bento_tag: str) -> bool:
        """Remove a Bento (one that failed or missed its parity check must never be served); False if that failed."""
        return self._delete(["delete", "-y", bento_tag], f"Bento {bento_tag}")

    def delete_model(self, model_tag: str) -> bool:
        """Remove a model from BentoML's model store (a Bento keeps its own copy); False if that failed."""
        return self._delete(["models", "delete", "-y", model_tag], f"BentoML model {model_tag}")

    def stored(self) -> dict[str, list[str]]:
        """Tags of the Bentos and of the models in the stores: ``{"bentos": [...], "models": [...]}``."""
        out = {}
        for kind, args in (("bentos", ["list"]), ("models", ["models", "list"])):
            done = run_bounded([self._bentoml(), *args, "-o", "json"], self.command_timeout_s,
                               f"bentoml {' '.join(args)}", env=self.env())
            if done.returncode != 0:
                raise RuntimeError(f"bentoml {' '.join(args)} failed (exit {done.returncode}): {done.stderr[-1000:]}")
            out[kind] = [str(item["tag"]) for item in json.loads(done.stdout or "[]")]
        return out

    def prune(self, keep: set[str]) -> list[str]:
        """Delete every Bento and model whose tag is not in ``keep``; the tags deleted.

        Run under ``exclusive()``: what a crashed run left behind (built, never verified) goes, what a
        concurrent run is building cannot.
        """
        stored = self.stored()
        deleted = [tag for tag in stored["bentos"] if tag not in keep and self.delete(tag)]
        deleted += [tag for tag in stored["models"] if tag not in keep and self.delete_model(tag)]
        return deleted

    @contextlib.contextmanager
    def serve(self, bento_tag: str, log: Path, prediction_log_url: str | None = None) -> Iterator[ServedBento]:
        """Serve a built Bento on 127.0.0.1 (a real ``bentoml serve`` process) behind a fresh random token.

        The server dies with this process; clients send ``ServedBento.headers``. One worker process
        (``SERVICE_WORKERS=1``): a check or a demo has no load to spread, and each extra worker costs
        seconds of CPU to start (torch, BentoML, the model), which ``make run`` pays on 2 cores.
        """
        port = free_port()
        token = secrets.token_urlsafe(32)
        url = f"http://127.0.0.1:{port}"
        # One worker: the parity check and the demo need no second process importing torch and the model.
        env = self.env(SERVICE_API_TOKEN=token, SERVICE_WORKERS="1",
                       **({"PREDICTION_LOG_URL": prediction_log_url} if prediction_log_url else {}))
        for name in ("SERVICE_AUTH_DISABLED", "SERVICE_TLS_CERTFILE", "SERVICE_TLS_KEYFILE"):  # a loopback check, plain HTTP
            env.pop(name, None)
        command = [self._bentoml(), "serve", bento_tag, "--host", "127.0.0.1", "-p", str(port)]
        with running_server(command, f"{url}/readyz", log, timeout_s=120, env=env):
            yield ServedBento(url, token)

    def check_parity(self, bento_tag: str, sample: "pd.DataFrame", unit: "ModelUnit", tolerance: float,
                     workdir: Path) -> "ParityReport":
        """Serve the Bento and compare its HTTP answers on ``sample`` with ``unit``'s (``serving.parity``).

        A Bento that fails, or whose check did not finish (whatever stopped it), is deleted here: an
        unchecked Bento is never left in the store (one a kill -9 leaves behind is pruned next run).
        Its server writes its prediction log under ``workdir``, never into the monitored one.
        """
        from serving.parity import check_parity

        try:
            with self.serve(bento_tag, workdir / "serve.log", prediction_log_url=str(workdir / "plog")) as served:
                report = check_parity(served.url, served.headers, sample, unit, tolerance)
        except BaseException:
            self.delete(bento_tag)
            raise
        if not report.passed:
            self.delete(bento_tag)
        return report

    def export_destination(self) -> LakeStorage:
        """The release location as object storage: ``export_url`` with the lake's S3 endpoint, region and SSE (KMS key included).

        Uploads go through ``LakeStorage.write_bytes``, not through ``bentoml export s3://…``: BentoML
        hands the URL to fsspec without options, so s3fs sends no ``ServerSideEncryption`` (checked
        against a moto server; only a global ``FSSPEC_S3`` JSON variable would add it), while
        ``write_bytes`` requests ``LAKE_SSE`` on every put, is one whole-object put (a reader never sees
        a partial archive), and lets us hash exactly the bytes uploaded.
        """
        if not self.export_url:
            raise ValueError("no export location: set BENTO_EXPORT_URL (s3://bucket/prefix or a folder)")
        if "://" in self.export_url and not self.export_url.startswith("s3://"):
            raise ValueError(f"BENTO_EXPORT_URL={self.export_url!r}: only s3://bucket/prefix or a local folder is supported")
        return LakeStorage.from_settings(settings.lake().under(self.export_url))

    def export(self, bento_tag: str) -> ExportedBento:
        """Export a built Bento (``bentoml export``) and upload the archive to ``export_url``.

        The archive is ``<name>-<version>.bento`` under the export location, importable anywhere with
        ``bentoml import`` and the input of ``bentoml containerize``. The export holds the store's lock,
        so a concurrent ``bento`` run cannot prune the Bento mid-export.
        """
        destination = self.export_destination()
        file_name = release_file_name(bento_tag)
        with tempfile.TemporaryDirectory(prefix="bento-export-") as tmp:
            archive = Path(tmp) / file_name
            with self.exclusive():
                done = run_bounded([self._bentoml(), "export", bento_tag, str(archive)], self.build_timeout_s,
                                   f"bentoml export {bento_tag}", env=self.env())
            if done.returncode != 0 or not archive.is_file():
                raise RuntimeError(f"bentoml export {bento_tag} failed (exit {done.returncode}): {done.stderr[-1500:]}")
            data = archive.read_bytes()
        destination.write_bytes(file_name, data)
        return ExportedBento(uri=destination.uri(file_name), sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))

    def _delete(self, args: list[str], what: str) -> bool:
        try:
            done = run_bounded([self._bentoml(), *args], self.command_timeout_s, f"deleting {what}", env=self.env())
        except RuntimeError as exc:
            dg.get_dagster_logger().error(str(exc))
            return False
        if done.returncode != 0:
            dg.get_dagster_logger().error(f"could not delete {what}: {done.stderr[-500:]}")
        return done.returncode == 0

    def _bentoml(self) -> str:
        return str(Path(self.python).parent / "bentoml")


def _project_root() -> str:
    return str(Path(__file__).resolve().parents[1])
