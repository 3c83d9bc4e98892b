"""Inference: the champion as a Bento (checked against the registry over HTTP), its release, and batch scoring of feature days."""

from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from assets.features import flight_features
from assets.partitions import daily_partitions, on_new_upstream_partition
from assets.policies import IO_RETRY
from assets.versions import derived_code_version
from assets.training import champion_model
from ml.tables import Table
from resources.mlflow_registry import MlflowRegistry
from resources.bento_store import BentoStore
from resources.storage import LakeStorage

if TYPE_CHECKING:
    import pandas as pd

    from ml.model import ModelUnit
    from resources.bento_store import BuiltBento
    from serving.parity import ParityReport

PARITY_CHECK = "serves_registry_predictions"


class BentoConfig(dg.Config):
    parity_rows: int = 500
    """Rows of the champion's test days sent to the served Bento and to the registry model."""
    parity_tolerance: float = 1e-6
    """Largest allowed |HTTP − registry| difference in probability."""
    keep_verified: int = 3
    """Verified Bentos (newest first) kept in BentoML's stores; everything else is pruned at the start of a run."""


def _champion(registry: MlflowRegistry) -> tuple[str, str]:
    champion = registry.champion()
    if champion is None:
        raise dg.Failure("no champion in the registry yet: materialize champion_model first", allow_retries=False)
    return champion.version, champion.run_id


def _verified_unit_failure(asset: str, version: str, exc: Exception) -> dg.Failure:
    """A registered unit that fails verification is a fact about the artifact, not a transient fault: no retry."""
    from infra.redaction import redact

    return dg.Failure(
        description=redact(f"{asset}: champion v{version} refused, nothing of it was loaded: {exc}"),
        allow_retries=False,
    )


def verified_bento_tags(instance: dg.DagsterInstance, keep: int) -> list[dict[str, str]]:
    """The newest ``keep`` Bentos a `bento` run verified (tag, model tag), newest first.

    Only a run whose parity check passed materializes `bento`, so this is the list of what may be
    served or deployed (`python -m pipelines.verified_bento`), never BentoML's `latest`.
    """
    records = instance.fetch_materializations(dg.AssetKey("bento"), limit=max(keep, 1)).records
    out = []
    for record in records:
        metadata = record.asset_materialization.metadata if record.asset_materialization else {}
        if "bento_tag" in metadata:
            out.append({"bento_tag": str(metadata["bento_tag"].value),
                        "bentoml_model": str(metadata["bentoml_model"].value) if "bentoml_model" in metadata else ""})
    return out


def _parity_sample(storage: LakeStorage, rows: int) -> "pd.DataFrame":
    """The flights the parity check sends: up to ``rows`` of the newest training window's test days."""
    from resources.parquet_io import Warehouse
    from serving.parity import parity_sample

    window = Warehouse(storage).run_output(Table.TRAINING_SET)
    if window is None:
        raise dg.Failure("bento: no training_set to draw parity rows from; materialize training_set first", allow_retries=False)
    return parity_sample(window, rows)


def _prune_unverified(context: dg.AssetExecutionContext, bentos: BentoStore, keep: int) -> list[str]:
    """Delete what no verified run recorded (left by a crash); the tags deleted. Run under ``bentos.exclusive()``."""
    verified = verified_bento_tags(context.instance, keep)
    pruned = bentos.prune({tag for v in verified for tag in v.values() if tag})
    if pruned:
        context.log.warning(f"pruned {len(pruned)} Bento(s)/model(s) no verified run recorded: {pruned}")
    return pruned


def _download_verified_unit(registry: MlflowRegistry, version: str, into: str) -> tuple[str, Path, "ModelUnit"]:
    """The champion's registered digest, its unit's folder under ``into`` and the unit loaded from it, verified."""
    from ml.model import ModelUnit, UnitIntegrityError

    try:
        digest = registry.registered_digest(version)
        unit_dir = registry.download_verified_unit(version, into)
        return digest, unit_dir, ModelUnit.load(unit_dir, expected_digest=digest)
    except UnitIntegrityError as exc:
        raise _verified_unit_failure("bento", version, exc) from None


def _parity_check_result(report: "ParityReport", model_uri: str) -> dg.AssetCheckResult:
    """The parity report as the blocking check's result."""
    return dg.AssetCheckResult(
        check_name=PARITY_CHECK,
        passed=report.passed,
        description=f"{report.rows} rows over HTTP vs the verified unit of {model_uri}: max |diff| {report.max_abs_diff:.2e}",
        metadata={"rows": report.rows, "max_abs_diff": report.max_abs_diff, "tolerance": report.tolerance},
    )


def _bento_metadata(built: "BuiltBento", version: str, model_uri: str, digest: str, pruned: list[str],
                    bentoml_home: str) -> dict:
    """What a verified Bento's materialization records: `bento_tag` is what serving and deployments use."""
    return {
        "bento_tag": built.bento_tag,
        "bentoml_model": built.model_tag,
        "model_version": version,
        "model_uri": model_uri,
        "unit_sha256": digest,
        "size_bytes": built.size_bytes,
        "bento_path": dg.MetadataValue.path(built.path),
        "pruned": dg.MetadataValue.json(pruned),
        "serve": dg.MetadataValue.text(f"SERVICE_API_TOKEN=… BENTOML_HOME={bentoml_home} bentoml serve {built.bento_tag}"),
    }


@derived_code_version
@dg.asset(
    group_name="inference",
    kinds={"bentoml"},
    deps=[champion_model, "training_set"],  # the parity rows come from the newest training window
    check_specs=[
        dg.AssetCheckSpec(PARITY_CHECK, asset="bento", blocking=True,
                          description="The built Bento, served over HTTP, predicts what the registry's model predicts."),
    ],
    output_required=False,
    retry_policy=IO_RETRY,
)
def bento(context: dg.AssetExecutionContext, config: BentoConfig, registry: MlflowRegistry,
          bentos: BentoStore, storage: LakeStorage):
    """The champion packaged as a BentoML service (`serving/service.py`), ready to serve or containerize.

    The champion's unit, verified against the SHA-256 recorded at its registration, goes into
    BentoML's model store (with that digest, which the service checks again at load) and a Bento is
    built around it (`deploy/bentofile.yaml`). The parity check serves that Bento with `bentoml serve`
    on 127.0.0.1 behind a one-off token and compares its HTTP predictions on real test-day flights
    with the verified unit's (nothing the registry holds is executed). Only a Bento that passed is
    materialized: its `bento_tag` is what `make serve` and deployments use, never BentoML's `latest`.
    Bentos and models no verified run recorded (left by a crash) are pruned when the next run starts.
    """
    import tempfile

    version, run_id = _champion(registry)
    model_uri = registry.model_uri(version)
    with bentos.exclusive(), tempfile.TemporaryDirectory(prefix="bento-") as tmp:
        pruned = _prune_unverified(context, bentos, config.keep_verified)
        digest, unit_dir, unit = _download_verified_unit(registry, version, tmp)  # a hostile champion stops here
        sample = _parity_sample(storage, config.parity_rows)  # before the build: no window, no build time spent
        built = bentos.build(unit_dir, digest, version, run_id, model_uri)
        context.log.info(f"built {built.bento_tag} with model {built.model_tag} (registry v{version})")
        report = bentos.check_parity(built.bento_tag, sample, unit, config.parity_tolerance, Path(tmp))
        check = _parity_check_result(report, model_uri)
        if report.passed:
            # Recorded while the lock is held: a run that starts next must see this Bento as verified.
            yield dg.MaterializeResult(metadata=_bento_metadata(built, version, model_uri, digest, pruned,
                                                                bentos.bentoml_home))
        else:
            context.log.error(f"bento {built.bento_tag} failed parity and was deleted: {check.description}")
        yield check


@dg.asset(
    group_name="inference",
    kinds={"bentoml", "s3"},
    deps=[bento],
    code_version=bento.code_versions_by_key[bento.key],  # it calls no ml/ module: it releases what `bento` built
    retry_policy=IO_RETRY,
)
def bento_release(context: dg.AssetExecutionContext, bentos: BentoStore) -> dg.MaterializeResult:
    """The newest verified Bento, exported to the release bucket, and the image tag a rollout deploys.

    Downstream of `bento`, whose blocking parity check gates it: only a Bento that served the
    registry's predictions over HTTP is released. With `BENTO_EXPORT_URL` set, the Bento is exported
    (`bentoml export`) as `<name>-<version>.bento` under that location, uploaded with server-side
    encryption; its URI and SHA-256 are recorded. The `image` is what `bentoml containerize` tags
    for it in `BENTO_IMAGE_REPOSITORY`: the tag to set in `deploy/k8s/serving` (docs/serving-kubernetes.md).
    Without `BENTO_EXPORT_URL` it materializes with `exported: false` and the reason.
    """
    from resources.bento_store import image_reference

    verified = verified_bento_tags(context.instance, 1)
    if not verified:
        raise dg.Failure("bento_release: no verified Bento yet; materialize bento first", allow_retries=False)
    bento_tag = verified[0]["bento_tag"]
    image = image_reference(bento_tag, bentos.image_repository)
    metadata = {
        "bento_tag": bento_tag,
        "image": image,
        "containerize": dg.MetadataValue.text(f"bentoml containerize {bento_tag} -t {image}"),
    }
    if not bentos.export_url:
        context.log.info("bento_release: BENTO_EXPORT_URL is not set; the Bento stays in the local store")
        return dg.MaterializeResult(metadata={
            **metadata, "exported": False,
            "reason": "BENTO_EXPORT_URL is not set: set it (s3://bucket/prefix) to export verified Bentos",
        })
    exported = bentos.export(bento_tag)
    context.log.info(f"exported {bento_tag} to {exported.uri} (sha256 {exported.sha256[:12]}…); image to roll: {image}")
    return dg.MaterializeResult(metadata={
        **metadata, "exported": True,
        "export_uri": dg.MetadataValue.url(exported.uri) if exported.uri.startswith("s3://") else dg.MetadataValue.path(exported.uri),
        "sha256": exported.sha256,
        "size_bytes": exported.size_bytes,
    })


@derived_code_version
@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="inference",
    kinds={"pytorch", "parquet"},
    deps=[flight_features, champion_model],
    automation_condition=on_new_upstream_partition(ignore=["champion_model"]),
    retry_policy=IO_RETRY,
)
def batch_predictions(context: dg.AssetExecutionContext, registry: MlflowRegistry, storage: LakeStorage):
    """The champion's delay probability for every flight of the day, scored in batch (no HTTP).

    The same unit and preprocessing as the service (`ml.model.ModelUnit`, verified against the
    digest recorded at registration), vectorised over the day; each row keeps the flight's keys and
    the model version. Days without features are skipped.
    """
    import pandas as pd

    from ml.features import KEY_COLUMNS
    from ml.model import UnitIntegrityError
    from resources.parquet_io import Warehouse
    from serving.prediction_log import SCORE

    version, _ = _champion(registry)
    try:
        unit = registry.load_unit(version)
    except UnitIntegrityError as exc:
        raise _verified_unit_failure("batch_predictions", version, exc) from None
    scored_at = pd.Timestamp.now(tz="UTC")
    out, rows = {}, 0
    for day in context.partition_keys:
        features = Warehouse(storage).frame(Table.FLIGHT_FEATURES, day)
        if features is None:
            context.log.warning(f"batch_predictions {day}: no flight_features partition; skipped")
            out[day] = None
            continue
        scored = features[[*KEY_COLUMNS, "dest"]].copy()
        scored[SCORE] = unit.predict_proba(features).astype("float64")
        scored["model_version"] = version
        scored["scored_at"] = scored_at
        out[day] = scored
        rows += len(scored)
    return dg.Output(
        out,
        metadata={"dagster/row_count": rows, "model_version": version,
                  "days_without_features": dg.MetadataValue.json(sorted(d for d, f in out.items() if f is None))},
    )
