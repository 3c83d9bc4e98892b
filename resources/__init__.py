"""Resources: one place where the environment picks embedded defaults or production services."""

from __future__ import annotations

import dagster as dg

from resources import settings
from resources.parquet_io import LakeParquetIOManager
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
    }


def build_defs() -> dg.Definitions:
    return dg.Definitions(resources=resources_from_env())
