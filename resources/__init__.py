"""Resources: one place where the environment picks embedded defaults or production services."""

from __future__ import annotations

import dagster as dg
from pydantic import SecretStr

from infra import settings
from resources.alerts import AlertWebhook
from resources.compute import DaskCluster, TorchCompute
from resources.mlflow_registry import MlflowRegistry
from resources.parquet_io import LakeParquetIOManager
from resources.bento_store import BentoStore
from resources.storage import LakeStorage
from resources.stream import AirportStream
from resources.trainer import DistributedTrainer
from resources.value_io import LakeValueIOManager


def lake_storage_from_env() -> LakeStorage:
    return LakeStorage.from_settings(settings.lake())


def resources_from_env() -> dict[str, object]:
    """Every resource the definitions bind, configured from the environment.

    A setting that may carry a secret is bound as ``dg.EnvVar`` when set: Dagster resolves it in the
    run process, and the UI, the run config and the repository snapshot hold the variable's name only.
    """
    storage = lake_storage_from_env()
    return {
        "storage": storage,
        **io_managers(storage),
        "registry": mlflow_registry_from_env(secrets_as_env_vars=True),
        "alerts": AlertWebhook(url=_secret("ALERT_WEBHOOK_URL", settings.observability().alert_webhook_url)),
        "compute": TorchCompute.from_settings(),
        "trainer": DistributedTrainer.from_settings(),
        "dask": DaskCluster(scheduler_address=settings.compute().dask_scheduler_address),
        "bentos": BentoStore(
            bentoml_home=settings.project().bentoml_home, prediction_log_url=settings.prediction_log().url
        ),
        # NATS_URL may carry credentials (nats://user:password@host): bound by name when set
        "stream": AirportStream(nats_url=_secret("NATS_URL", settings.stream().nats_url)),
    }


def io_managers(storage: LakeStorage, **parquet_options) -> dict[str, dg.ConfigurableIOManagerFactory | dg.ConfigurableIOManager]:
    """Tables as Parquet (``io_manager``) and typed values as JSON (``value_io_manager``), both in the lake."""
    return {"io_manager": LakeParquetIOManager(storage=storage, **parquet_options),
            "value_io_manager": LakeValueIOManager(storage=storage)}


def _secret(variable: str, value: SecretStr | None) -> dg.EnvVar | str | None:
    """``dg.EnvVar(variable)`` when the variable is set, else the embedded default ``value``'s text."""
    if settings.is_set(variable):
        return dg.EnvVar(variable)
    return value.get_secret_value() if value is not None else None


def mlflow_registry_from_env(secrets_as_env_vars: bool = False) -> MlflowRegistry:
    """The registry from the environment; for Definitions, with a set tracking URI bound as ``dg.EnvVar``.

    Code outside Dagster (CLIs, tests) uses the resource directly, where an ``EnvVar`` is never resolved:
    it gets the value.
    """
    registry = settings.registry()
    uri = registry.tracking_uri
    return MlflowRegistry(
        tracking_uri=_secret("MLFLOW_TRACKING_URI", uri) if secrets_as_env_vars else uri.get_secret_value(),
        artifact_location=registry.artifact_location,
        lock_path=str(settings.project().data_dir / "mlflow" / "promotion.lock"),
    )


def build_defs() -> dg.Definitions:
    return dg.Definitions(resources=resources_from_env())
