"""Jobs: named selections of assets."""

import dagster as dg

from assets.partitions import daily_partitions

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.groups("ingest"),
    partitions_def=daily_partitions,
    description="Landing files → validated raw Parquet (flights, weather) and the reference tables.",
)

features_job = dg.define_asset_job(
    "features_job",
    selection=dg.AssetSelection.groups("features"),
    partitions_def=daily_partitions,
    description="Validated raw days → flight_features (ranges as one step; long ranges on Dask).",
)

training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.groups("training") | dg.AssetSelection.assets("bento", "bento_release"),
    description=(
        "training_set → delay_model (MLflow, gated by checks) → champion_model (alias promotion)"
        " → bento (parity-checked over HTTP) → bento_release (exported, image tag recorded)."
    ),
)

batch_predictions_job = dg.define_asset_job(
    "batch_predictions_job",
    selection=dg.AssetSelection.assets("batch_predictions"),
    partitions_def=daily_partitions,
    description="The champion scores feature days in batch (a range is one step).",
)

bento_job = dg.define_asset_job(
    "bento_job",
    selection=dg.AssetSelection.assets("bento", "bento_release"),
    description=(
        "Build the champion's Bento, check it over HTTP and release it (exported, image tag recorded);"
        " deploy_on_promotion_sensor starts it."
    ),
)

monitoring_job = dg.define_asset_job(
    "monitoring_job",
    selection=dg.AssetSelection.groups("monitoring"),
    partitions_def=daily_partitions,
    description="drift_report and model_performance for a day (or a range, as one run).",
)
