"""MLflow tracking and model registry: SQLite + local artifacts by default, an `mlflow server` by URI."""

import contextlib
import dataclasses
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import BaseModel, PrivateAttr

if TYPE_CHECKING:
    import pandas as pd

    from ml.evaluation import Evaluation, Importance
    from ml.model import ModelUnit
    from ml.train import TrainResult

CHAMPION_ALIAS = "champion"
UNIT_ARTIFACT_PATH = "artifacts/unit"  # where the pyfunc model keeps the saved ModelUnit
UNIT_DIGEST_TAG = "unit_sha256"
"""Model-version tag: SHA-256 of the unit's files (``ml.model.unit_digest``), set when the version is registered."""
PROMOTION_TAGS = ("previous_version", "promoted_by", "promotion_reason", "promoted_at")
REFERENCE_ARTIFACT_DIR = "monitoring"
REFERENCE_FILE = "drift_reference.parquet"
"""A stratified sample of the version's training rows, logged with it: what drift is measured against."""
PYFUNC_FILE = Path(__file__).resolve().parent / "delay_pyfunc.py"
"""The pyfunc flavour logged with every version ("models from code"); only MLflow ever loads it."""
ML_PACKAGE = Path(__file__).resolve().parents[1] / "ml"
NONE = "none"
"""What a tag holds where there is no value (no champion, no reason, no previous version)."""
NOT_AVAILABLE = "n/a"
PASSED, REJECTED = "passed", "rejected"
EPOCH_METRICS = ("train_loss", "val_loss", "val_roc_auc", "samples_per_s")
IMPORTANCE_ARTIFACT = "explainability/permutation_importance.json"
"""A version's permutation importance by feature group (``ml.importance``), logged with its training run."""


class Candidate(BaseModel, frozen=True):
    """A registered version of the delay model and its verdict, as recorded at registration.

    ``passed`` is the verdict of its blocking checks; ``reason`` why it was rejected ("" when it
    passed); ``outcome`` the verdict's (``ml.promotion``: promote, keep_champion, reject; "" for a
    version registered by hand). ROC AUCs are on the candidate's own test set (``champion_roc_auc``
    None: there was no champion to compare with). A version registered without a verdict has not passed.
    What `delay_model` hands `champion_model` (stored as JSON by ``resources/value_io.py``).
    """

    version: str
    run_id: str
    model_uri: str
    passed: bool
    reason: str
    test_roc_auc: float | None
    baseline_roc_auc: float | None
    champion_roc_auc: float | None
    evaluated_against: str | None
    """The champion's version when this candidate was judged; None when there was none."""
    data_fingerprint: str
    unit_digest: str
    dagster_run_id: str
    outcome: str = ""
    window_last_day: str | None = None
    """The last day of the training window (the retraining sensor counts new labelled days from it)."""
    run_link: str = ""
    champion_gain: dict | None = None
    """The paired interval of the ROC AUC gain over ``evaluated_against`` (``ml.evidence.Interval.as_record``)."""


@dataclass(frozen=True)
class Provenance:
    """Where a candidate comes from: what MLflow records beside its evaluation."""

    run_name: str
    params: Mapping[str, Any]
    data_fingerprint: str
    code_version: str
    dagster_run_id: str
    window_last_day: str | None = None


@dataclass(frozen=True)
class JudgedAgainst:
    """The champion a candidate is judged against."""

    version: str
    unit: "ModelUnit"
    importance: dict | None


def _version_tags(evaluation: "Evaluation", provenance: Provenance) -> dict[str, str]:
    return {
        "candidate_status": PASSED if evaluation.verdict.passed else REJECTED,
        "verdict": evaluation.verdict.outcome,
        "rejection_reason": "; ".join(evaluation.verdict.reasons) or NONE,
        "evaluated_against_champion": evaluation.champion_version or NONE,
        "test_roc_auc": f"{evaluation.metrics['roc_auc']:.4f}",
        "baseline_test_roc_auc": f"{evaluation.baseline['roc_auc']:.4f}",
        "champion_test_roc_auc": f"{evaluation.champion['roc_auc']:.4f}" if evaluation.champion else NOT_AVAILABLE,
        "data_fingerprint": provenance.data_fingerprint,
        "dagster_run_id": provenance.dagster_run_id,
        "window_last_day": provenance.window_last_day or NONE,
        "champion_gain": json.dumps(evaluation.gain_record()) if evaluation.champion_gain else NONE,
    }


def register_unit(registry: "MlflowRegistry", unit: "ModelUnit", example: "pd.DataFrame") -> str:
    """Log ``unit`` as the pyfunc model of the active MLflow run, register it, record its digest; the version.

    The digest is taken from the saved files before they are logged, so whatever changes them later
    (in the artifact store, in transit) is refused wherever the version is loaded.
    """
    import mlflow
    from mlflow.models import infer_signature

    from ml.model import unit_digest

    with tempfile.TemporaryDirectory() as tmp:
        unit_dir = unit.save(Path(tmp) / "unit")
        digest = unit_digest(unit_dir)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PYFUNC_FILE),
            artifacts={"unit": str(unit_dir)},
            code_paths=[str(ML_PACKAGE)],
            model_config={UNIT_DIGEST_TAG: digest},
            signature=infer_signature(example, unit.predict_proba(example)),
            pip_requirements=["torch", "pandas<3", "numpy", "scikit-learn"],
            registered_model_name=registry.model_name,
        )
    version = str(info.registered_model_version)
    registry.client().set_model_version_tag(registry.model_name, version, UNIT_DIGEST_TAG, digest)
    return version


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
    artifact_sse: str = ""
    """Server-side encryption of artifacts the client writes to S3 itself (``AES256``, ``aws:kms``,
    ``none``); empty: the lake's setting (``LAKE_SSE``, AES256 unless set)."""

    _client: Any = PrivateAttr(default=None)

    def client(self):
        import mlflow
        from mlflow import MlflowClient

        if self._client is None:
            os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
            self._request_artifact_sse()
            if self.tracking_uri.startswith("sqlite:///"):
                Path(self.tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
            uri = self._uri_without_credentials()
            mlflow.set_tracking_uri(uri)
            mlflow.set_registry_uri(uri)
            self._client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        return self._client

    def _uri_without_credentials(self) -> str:
        """The tracking URI with ``user:password@`` moved into MLflow's basic-auth variables.

        MLflow prints its tracking URI ("View run … at …") and puts it in every request error: with
        credentials left in the URI they would reach compute logs and failure events. Variables the
        operator set already win.
        """
        from urllib.parse import unquote, urlsplit, urlunsplit

        parts = urlsplit(self.tracking_uri)
        if not parts.scheme.startswith("http") or "@" not in parts.netloc:
            return self.tracking_uri
        userinfo, _, host = parts.netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        if user:
            os.environ.setdefault("MLFLOW_TRACKING_USERNAME", unquote(user))
        if password:
            os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", unquote(password))
        return urlunsplit(parts._replace(netloc=host))

    def _request_artifact_sse(self) -> None:
        """Ask S3 to encrypt every artifact this process uploads (MLflow's S3 store reads the variable per upload).

        Only uploads the client makes itself are covered (an ``s3://`` artifact root); with proxied
        artifacts (``mlflow server --artifacts-destination s3://…``) the server's environment needs
        the same ``MLFLOW_S3_UPLOAD_EXTRA_ARGS``. A value set by the operator is left as it is.
        """
        from infra import settings

        lake = settings.lake()
        sse = self.artifact_sse or lake.sse or "none"
        if sse.lower() != "none":
            arguments = lake.model_copy(update={"sse": sse}).sse_arguments()
            os.environ.setdefault("MLFLOW_S3_UPLOAD_EXTRA_ARGS", json.dumps(arguments))

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
        """Where a person finds the run: the server UI, or the run's id in the local store (credentials masked)."""
        from infra.redaction import redact

        if self.tracking_uri.startswith("http"):
            return redact(f"{self._uri_without_credentials().rstrip('/')}/#/experiments/{self.experiment_id()}/runs/{run_id}")
        return redact(f"{self.tracking_uri} run {run_id} (mlflow ui --backend-store-uri {self.tracking_uri})")

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

    def champion_uri(self) -> str:
        """The URI that always resolves to the champion (the alias, not a version)."""
        return f"models:/{self.model_name}@{CHAMPION_ALIAS}"

    def candidate(self, version: str) -> Candidate:
        """A registered version and the verdict recorded with it."""
        found = self.client().get_model_version(self.model_name, str(version))
        tags = found.tags

        def number(key: str) -> float | None:
            value = tags.get(key, NOT_AVAILABLE)
            return None if value in (NOT_AVAILABLE, NONE, "") else float(value)

        reason = tags.get("rejection_reason", "")
        against = tags.get("evaluated_against_champion", NONE)
        return Candidate(
            version=str(found.version),
            run_id=found.run_id or "",
            model_uri=self.model_uri(str(found.version)),
            passed=tags.get("candidate_status") == PASSED,
            reason="" if reason == NONE else reason,
            test_roc_auc=number("test_roc_auc"),
            baseline_roc_auc=number("baseline_test_roc_auc"),
            champion_roc_auc=number("champion_test_roc_auc"),
            evaluated_against=None if against == NONE else against,
            data_fingerprint=tags.get("data_fingerprint", ""),
            unit_digest=tags.get(UNIT_DIGEST_TAG, ""),
            dagster_run_id=tags.get("dagster_run_id", ""),
            outcome=tags.get("verdict", ""),
            window_last_day=None if tags.get("window_last_day", NONE) == NONE else tags["window_last_day"],
            run_link=self.run_link(found.run_id) if found.run_id else "",
            champion_gain=None if tags.get("champion_gain", NONE) == NONE else json.loads(tags["champion_gain"]),
        )

    def champion(self) -> Candidate | None:
        """The version behind the champion alias, None when there is none; a registry that cannot be reached raises."""
        version = self.champion_version()
        return None if version is None else self.candidate(version)

    def register(self, evaluation: "Evaluation", trained: "TrainResult", provenance: Provenance) -> Candidate:
        """Log an evaluated candidate as one MLflow run, register it as a new version, record its verdict.

        The run gets the training params, one step per epoch (``epoch`` is the step; an ensemble's first
        network logs ``epoch_*``, the others ``member<k>_epoch_*``), the test metrics of the model, the
        baseline and the champion, the permutation importance and the drift reference sample. The version
        gets its unit (with the digest of its files) and the verdict as tags: a rejected version stays
        registered with its reason and is never promoted.
        """
        import mlflow

        with mlflow.start_run(experiment_id=self.experiment_id(), run_name=provenance.run_name) as run:
            self._log_training(run.info.run_id, evaluation, trained, provenance)
            version = register_unit(self, trained.unit, evaluation.example)
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / REFERENCE_FILE
                evaluation.reference.to_parquet(path, index=False)
                mlflow.log_artifact(str(path), artifact_path=REFERENCE_ARTIFACT_DIR)
        self.log_importance(run.info.run_id, evaluation.importance)
        for key, value in _version_tags(evaluation, provenance).items():
            self.client().set_model_version_tag(self.model_name, version, key, value)
        return self.candidate(version)

    def _log_training(self, run_id: str, evaluation: "Evaluation", trained: "TrainResult", provenance: Provenance) -> None:
        import mlflow
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        metrics = [
            Metric(f"{_member_prefix(epoch)}epoch_{name}", float(epoch[name]), now, int(epoch["epoch"]))
            for epoch in (dataclasses.asdict(stats) for stats in trained.history) for name in EPOCH_METRICS
        ]
        self.client().log_batch(run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in provenance.params.items()])
        mlflow.log_metrics({f"test_{k}": v for k, v in evaluation.metrics.items()})
        mlflow.log_metrics({f"baseline_test_{k}": v for k, v in evaluation.baseline.items()})
        if evaluation.champion:
            mlflow.log_metrics({f"champion_test_{k}": v for k, v in evaluation.champion.items()})
        if evaluation.champion_gain:
            gain = evaluation.champion_gain
            mlflow.log_metrics({"champion_gain": gain.estimate, "champion_gain_low": gain.low, "champion_gain_high": gain.high})
        mlflow.set_tags({"data_fingerprint": provenance.data_fingerprint, "code_version": provenance.code_version,
                         "dagster_run_id": provenance.dagster_run_id, "device": trained.device})

    def log_importance(self, run_id: str, importance: "Importance") -> None:
        """A candidate's permutation importance with its training run: the JSON artifact, the markdown table
        beside it, and one ``importance_<group>`` metric per group (versions compare side by side in MLflow)."""
        import re

        from mlflow.entities import Metric

        client = self.client()
        client.log_dict(run_id, {"test_roc_auc": importance.test_roc_auc, "groups": list(importance.groups)},
                        IMPORTANCE_ARTIFACT)
        client.log_text(run_id, importance.table, IMPORTANCE_ARTIFACT.replace(".json", ".md"))
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[
            Metric(f"importance_{re.sub(r'[^A-Za-z0-9_.-]', '_', g['group'])}", float(g["auc_drop"]), now, 0)
            for g in importance.groups
        ])

    def champion_for_judging(self) -> JudgedAgainst | None:
        """The champion a candidate is judged against: its version, verified unit and importance; None without one.

        The unit is verified against the digest recorded at its registration: a tampered or pickled
        champion raises ``UnitIntegrityError`` instead of judging the candidate.
        """
        version = self.champion_version()
        if version is None:
            return None
        return JudgedAgainst(version=version, unit=self.load_unit(version), importance=self.importance(version))

    def importance(self, version: str) -> dict | None:
        """The permutation importance logged with a version's run (``log_importance``), None where it has none."""
        import mlflow

        run_id = self.client().get_model_version(self.model_name, version).run_id
        try:
            return mlflow.artifacts.load_dict(f"runs:/{run_id}/{IMPORTANCE_ARTIFACT}")
        except Exception as exc:  # an older version, logged before importance existed
            if _is_not_found(exc) or isinstance(exc, FileNotFoundError) or "No such file" in str(exc):
                return None
            raise

    def champion_history(self) -> list[str]:
        """Every version that was ever promoted, in the order of its promotion (``promoted_at``)."""
        promoted = [v for v in self.client().search_model_versions(f"name='{self.model_name}'") if "promoted_at" in v.tags]
        return [str(v.version) for v in sorted(promoted, key=lambda v: (v.tags["promoted_at"], int(v.version)))]

    def registered_digest(self, version: str) -> str:
        """The SHA-256 recorded for a version's unit at registration; UnitIntegrityError when it has none."""
        from ml.model import UnitIntegrityError

        digest = self.client().get_model_version(self.model_name, version).tags.get(UNIT_DIGEST_TAG, "")
        if len(digest) != 64:
            raise UnitIntegrityError(
                f"{self.model_name} v{version}: no {UNIT_DIGEST_TAG} tag recorded at registration, so its files "
                "cannot be verified; refused (retrain it with delay_model, which records the digest)"
            )
        return digest

    def download_verified_unit(self, version: str, destination: str) -> Path:
        """A version's saved unit (weights + preprocessing) in ``destination``, verified against its digest.

        Raises UnitIntegrityError for a version without a digest or whose files do not match it.
        Nothing of the version runs: only its unit's files are fetched, never its registered code.
        """
        return self._fetch_unit(version, destination)[0]

    def load_unit(self, version: str):
        """A version's ``ModelUnit``, verified (digest, plain tensor weights) before anything in it is read."""
        import tempfile

        from ml.model import ModelUnit

        with tempfile.TemporaryDirectory(prefix="unit-") as tmp:
            unit_dir, digest = self._fetch_unit(version, tmp)
            return ModelUnit.load(unit_dir, expected_digest=digest)

    def _fetch_unit(self, version: str, destination: str) -> tuple[Path, str]:
        import mlflow

        from ml.model import verify_unit

        digest = self.registered_digest(version)
        root = mlflow.artifacts.download_artifacts(
            artifact_uri=f"{self.model_uri(version)}/{UNIT_ARTIFACT_PATH}", dst_path=destination
        )
        verify_unit(root, digest)
        return Path(root), digest

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

    def promote(self, candidate: Candidate | str, expected_champion: Candidate | str | None, promoted_by: str,
                reason: str) -> str | None:
        """Make ``candidate`` the champion if the champion is still ``expected_champion``; return the previous one.

        Idempotent: when the alias is already on ``version`` (a rerun after a crash between moving the
        alias and writing its audit tags) the missing tags are written and the promotion completes.
        Raises PromotionConflict when another promotion got there first.
        """
        version = candidate.version if isinstance(candidate, Candidate) else str(candidate)
        if isinstance(expected_champion, Candidate):
            expected_champion = expected_champion.version
        client = self.client()
        with self._promotion_lock():
            current = self.champion_version()
            if current == version and current != expected_champion:
                return self._complete_promotion(version, expected_champion, promoted_by, reason)
            if current != expected_champion:
                raise PromotionConflict(
                    f"{self.model_name}: champion is v{current}, but v{version} was evaluated against "
                    f"v{expected_champion}; not promoted (re-evaluate against the new champion)"
                )
            client.set_registered_model_alias(self.model_name, CHAMPION_ALIAS, version)
            self._write_promotion_tags(version, current, promoted_by, reason)
        return current

    def _complete_promotion(self, version: str, expected: str | None, promoted_by: str, reason: str) -> str | None:
        """The alias already points at ``version``: write whichever audit tags a crash left out."""
        tags = self.client().get_model_version(self.model_name, version).tags
        recorded = tags.get("previous_version")
        if recorded is not None and recorded != (expected or NONE):
            raise PromotionConflict(
                f"{self.model_name}: v{version} is champion already, promoted over v{recorded}, not over "
                f"v{expected or NONE} as this candidate was evaluated; nothing changed"
            )
        missing = [key for key in PROMOTION_TAGS if key not in tags]
        if missing:
            self._write_promotion_tags(version, expected, promoted_by, reason, only=missing)
            dg.get_dagster_logger().warning(
                f"{self.model_name} v{version}: the alias had moved but {missing} were missing "
                "(an interrupted promotion); completed"
            )
        return expected

    def _write_promotion_tags(self, version, previous, promoted_by, reason, only=PROMOTION_TAGS) -> None:
        values = {
            "previous_version": previous or NONE,
            "promoted_by": promoted_by,
            "promotion_reason": reason,
            "promoted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        client = self.client()
        for key in only:
            client.set_model_version_tag(self.model_name, version, key, values[key])


def _is_not_found(exc: Exception) -> bool:
    """MLflow's answer for a missing model or alias (an unreachable server is not one)."""
    code = getattr(exc, "error_code", "")
    return code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"} or "not found" in str(exc).lower()


def _member_prefix(epoch: Mapping[str, Any]) -> str:
    member = int(epoch.get("member", 0))
    return f"member{member}_" if member else ""
