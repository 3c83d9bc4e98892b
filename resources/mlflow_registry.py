"""MLflow tracking and model registry: SQLite + local artifacts by default, an `mlflow server` by URI."""

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

CHAMPION_ALIAS = "champion"
UNIT_ARTIFACT_PATH = "artifacts/unit"  # where the pyfunc model keeps the saved ModelUnit
REFERENCE_ARTIFACT_DIR = "monitoring"
REFERENCE_FILE = "drift_reference.parquet"
"""A stratified sample of the version's training rows, logged with it: what drift is measured against."""


class PromotionConflict(RuntimeError):
    """The champion moved between evaluation and promotion: the candidate was judged against another model."""


class MlflowRegistry(dg.ConfigurableResource):
    """Experiment tracking and the registry of the delay model.

    ``tracking_uri`` is ``sqlite:///…`` (embedded) or ``http://host:5000`` (an ``mlflow server``);
    ``artifact_location`` is used when the experiment is first created. Promotion by the
    ``champion`` alias is compare-and-swap under ``lock_path`` (a file lock; in a multi-host
    deployment the Dagster pool ``champion_promotion``, limit 1, serialises promotions).
    """

    tracking_uri: str
    artifact_location: str | None = None
    experiment: str = "flight-delay"
    model_name: str = "flight_delay"
    lock_path: str | None = None

    _client: Any = PrivateAttr(default=None)

    def client(self):
        import mlflow
        from mlflow import MlflowClient

        if self._client is None:
            os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
            if self.tracking_uri.startswith("sqlite:///"):
                Path(self.tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
            mlflow.set_tracking_uri(self.tracking_uri)
            mlflow.set_registry_uri(self.tracking_uri)
            self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return self._client

    def _artifact_location(self) -> str | None:
        """Artifacts of a SQLite store live beside it (never ./mlruns in whatever folder we run from)."""
        if self.artifact_location or not self.tracking_uri.startswith("sqlite:///"):
            return self.artifact_location
        return (Path(self.tracking_uri[len("sqlite:///"):]).parent / "artifacts").resolve().as_uri()

    def experiment_id(self) -> str:
        client = self.client()
        existing = client.get_experiment_by_name(self.experiment)
        if existing is not None:
            return existing.experiment_id
        try:
            return client.create_experiment(self.experiment, artifact_location=self._artifact_location())
        except Exception:  # created concurrently by another run
            return client.get_experiment_by_name(self.experiment).experiment_id

    def run_link(self, run_id: str) -> str:
        """Where a person finds the run: the server UI, or the run's id in the local store."""
        if self.tracking_uri.startswith("http"):
            return f"{self.tracking_uri.rstrip('/')}/#/experiments/{self.experiment_id()}/runs/{run_id}"
        return f"{self.tracking_uri} run {run_id} (mlflow ui --backend-store-uri {self.tracking_uri})"

    def champion_version(self) -> str | None:
        """The champion's version, None when there is none; a registry that cannot be reached raises."""
        try:
            return str(self.client().get_model_version_by_alias(self.model_name, CHAMPION_ALIAS).version)
        except Exception as exc:
            if _is_not_found(exc):
                return None
            raise

    def model_uri(self, version: str) -> str:
        return f"models:/{self.model_name}/{version}"

    def download_unit(self, version: str, destination: str) -> Path:
        """Fetch a version's saved unit (weights + preprocessing) without unpickling anything."""
        import mlflow

        self.client()
        root = mlflow.artifacts.download_artifacts(artifact_uri=self.model_uri(version), dst_path=destination)
        return Path(root) / UNIT_ARTIFACT_PATH

    def download_reference(self, version: str, destination: str) -> Path:
        """The drift reference sample logged with a version's training run."""
        import mlflow

        run_id = self.client().get_model_version(self.model_name, version).run_id
        return Path(
            mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=f"{REFERENCE_ARTIFACT_DIR}/{REFERENCE_FILE}", dst_path=destination
            )
        )

    @contextlib.contextmanager
    def _promotion_lock(self) -> Iterator[None]:
        if not self.lock_path:
            yield
            return
        path = Path(self.lock_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def promote(self, version: str, expected_champion: str | None, promoted_by: str, reason: str) -> str | None:
        """Make ``version`` the champion if the champion is still ``expected_champion``; return the previous one.

        Raises PromotionConflict when another promotion got there first.
        """
        client = self.client()
        with self._promotion_lock():
            current = self.champion_version()
            if current != expected_champion:
                raise PromotionConflict(
                    f"{self.model_name}: champion is v{current}, but v{version} was evaluated against "
                    f"v{expected_champion}; not promoted (re-evaluate against the new champion)"
                )
            client.set_registered_model_alias(self.model_name, CHAMPION_ALIAS, version)
            tags = {
                "previous_version": current or "none",
                "promoted_by": promoted_by,
                "promotion_reason": reason,
                "promoted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            for key, value in tags.items():
                client.set_model_version_tag(self.model_name, version, key, value)
        return current


def _is_not_found(exc: Exception) -> bool:
    """MLflow's answer for a missing model or alias (an unreachable server is not one)."""
    code = getattr(exc, "error_code", "")
    return code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"} or "not found" in str(exc).lower()
