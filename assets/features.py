"""Features: validated raw days → one row per scheduled flight with pre-departure features and the label."""

import dagster as dg

from assets.ingest import planes, raw_flights, raw_weather
from assets.partitions import daily_partitions
from resources.compute import DaskCluster
from resources.storage import LakeStorage

FEATURE_NULLS_CHECK = "feature_null_shares"
LABEL_RATE_CHECK = "label_rate_in_bounds"
ROW_COUNT_CHECK = "one_row_per_raw_flight"


class FeaturesConfig(dg.Config):
    dask_min_partitions: int = 32
    """Ranges of at least this many days are computed on the Dask cluster; shorter ones in process."""


def features_for_day(storage: LakeStorage, partition: str, planes_frame=None):
    """Build one day's features from the lake, or None when raw flights were held back (runs on Dask workers too)."""
    from ml.features import build_features
    from resources.parquet_io import read_warehouse_frame

    flights = read_warehouse_frame(storage, "raw_flights", partition)
    if flights is None:
        return None, False
    weather = read_warehouse_frame(storage, "raw_weather", partition)
    if planes_frame is None:
        planes_frame = read_warehouse_frame(storage, "planes")
    return build_features(flights, weather, planes_frame), weather is not None


def _features_task(storage_config: dict, partition: str):
    """Dask task: rebuild the storage client on the worker (clients do not travel) and build the day."""
    return features_for_day(LakeStorage(**storage_config), partition)


def _check(name: str, outcome, extra: dict | None = None) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=name,
        passed=outcome.passed,
        description=outcome.detail,
        metadata={k.replace("/", "_"): round(v, 5) for k, v in {**outcome.values, **(extra or {})}.items()},
    )


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="features",
    kinds={"pandas", "dask"},
    deps=[raw_flights, raw_weather, planes],
    check_specs=[
        dg.AssetCheckSpec(FEATURE_NULLS_CHECK, asset="flight_features", blocking=True,
                          description="Null share of each feature within its limit (ml/feature_checks.py)."),
        dg.AssetCheckSpec(LABEL_RATE_CHECK, asset="flight_features", blocking=True,
                          description="Share of flights arriving 15+ min late within plausible bounds."),
        dg.AssetCheckSpec(ROW_COUNT_CHECK, asset="flight_features", blocking=True,
                          description="One feature row per raw scheduled flight (cancelled keep a NA label)."),
    ],
    code_version="1",
)
def flight_features(
    context: dg.AssetExecutionContext, config: FeaturesConfig, storage: LakeStorage, dask: DaskCluster
):
    """Each scheduled flight with what is known at its scheduled departure, and whether it arrived 15+ min late.

    Joins the flight with its origin's weather at the scheduled hour and its plane's registry entry
    (`ml/features.py`); never uses dep_time, dep_delay, arr_time, arr_delay or air_time as features.
    Cancelled flights stay with a NA label (counted in metadata; training leaves them out).
    A day whose raw flights were held back has no features; a day whose weather was held back
    gets missing weather. Long ranges run on the Dask cluster, a day in process.
    """
    from ml import feature_checks
    from resources.parquet_io import read_warehouse_frame

    keys = context.partition_keys
    planes_frame = read_warehouse_frame(storage, "planes")
    if planes_frame is None:
        raise dg.Failure("flight_features: the planes table is missing; materialize `planes` first")
    if len(keys) >= config.dask_min_partitions or dask.scheduler_address:
        with dask.client() as client:
            storage_config = {
                "url": storage.url, "endpoint_url": storage.endpoint_url, "region_name": storage.region_name,
                "sse": storage.sse, "max_attempts": storage.max_attempts,
            }
            futures = client.map(_features_task, [storage_config] * len(keys), keys, pure=False)
            built = dict(zip(keys, client.gather(futures), strict=True))
        engine = "dask"
    else:
        built = {k: features_for_day(storage, k, planes_frame) for k in keys}
        engine = "pandas"

    frames = {k: f for k, (f, _) in built.items() if f is not None}
    no_flights = sorted(k for k, (f, _) in built.items() if f is None)
    no_weather = {k for k, (f, has_weather) in built.items() if f is not None and not has_weather}
    raw_rows = {k: len(read_warehouse_frame(storage, "raw_flights", k)) for k in frames}
    cancelled = int(sum(f["arrived_late"].isna().sum() for f in frames.values()))
    rows = int(sum(len(f) for f in frames.values()))
    for key in no_flights:
        context.log.warning(f"flight_features {key}: raw_flights has no Parquet (held back or not ingested)")

    yield dg.Output(
        {k: frames.get(k) for k in keys},
        metadata={
            "engine": engine,
            "dagster/row_count": rows,
            "cancelled_flights": cancelled,
            "partitions_without_raw_flights": dg.MetadataValue.json(no_flights),
            "partitions_without_weather": dg.MetadataValue.json(sorted(no_weather)),
        },
    )
    yield _check(FEATURE_NULLS_CHECK, feature_checks.null_shares(frames, no_weather))
    yield _check(LABEL_RATE_CHECK, feature_checks.label_rate(frames), {"cancelled": float(cancelled)})
    yield _check(ROW_COUNT_CHECK, feature_checks.row_counts_match(frames, raw_rows))
