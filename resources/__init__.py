"""Resources: one place where the environment picks embedded defaults or production services."""

from __future__ import annotations

import dagster as dg

from resources import settings
from resources.compute import DaskCluster, TorchCompute
from resources.mlflow_registry import MlflowRegistry
from resources.parquet_io import LakeParquetIOManager
from resources.serving import BentoServing
from resources.storage import LakeStorage


def lake_storage_from_env() -> LakeStorage:
    return LakeStorage(
        url=settings.lake_url(),
        endpoint_url=settings.s3_endpoint_url(),
        region_name=settings.s3_region(),
        sse=settings.s3_sse(),
    )


def resources_from_env() -> dict[str, object]:
    """Every resource the definitions bind, configured from the environment."""
    storage = lake_storage_from_env()
    return {
        "storage": storage,
        "io_manager": LakeParquetIOManager(storage=storage),
        "mlflow": mlflow_registry_from_env(),
        "compute": TorchCompute(device=settings.torch_device()),
        "dask": DaskCluster(scheduler_address=settings.dask_scheduler_address()),
        "serving": BentoServing(
            bentoml_home=settings.bentoml_home(), prediction_log_url=settings.prediction_log_url()
        ),
    }


def mlflow_registry_from_env() -> MlflowRegistry:
    return MlflowRegistry(
        tracking_uri=settings.mlflow_tracking_uri(),
        artifact_location=settings.mlflow_artifact_location(),
        lock_path=str(settings.data_dir() / "mlflow" / "promotion.lock"),
    )


def build_defs() -> dg.Definitions:
    return dg.Definitions(resources=resources_from_env())
