"""Jobs: named selections of assets."""

import dagster as dg

from assets.partitions import daily_partitions

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.groups("ingest"),
    partitions_def=daily_partitions,
    description="Landing files → validated raw Parquet (flights, weather) and the reference tables.",
)
