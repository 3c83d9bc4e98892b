"""Features: validated raw days → one row per scheduled flight with pre-departure features and the label."""

from typing import TYPE_CHECKING

import dagster as dg

from assets.ingest import airports, planes, raw_flights, raw_weather
from assets.partitions import daily_partitions
from assets.policies import IO_RETRY
from assets.versions import derived_code_version
from ml.feature_days import HISTORY_TABLE, RAW_UPSTREAMS, FeatureRange
from ml.tables import Table
from resources.compute import DaskCluster, Engine
from resources.storage import LakeStorage

if TYPE_CHECKING:
    from resources.parquet_io import Warehouse

FEATURE_NULLS_CHECK = "feature_null_shares"
LABEL_RATE_CHECK = "label_rate_in_bounds"
ROW_COUNT_CHECK = "one_row_per_raw_flight"
MODEL_INPUTS_CHECK = "model_inputs_intact"
FEATURE_CHECK_BLOCKING = {MODEL_INPUTS_CHECK: True, LABEL_RATE_CHECK: True, ROW_COUNT_CHECK: True, FEATURE_NULLS_CHECK: False}
"""Block only what the model cannot use; null shares it tolerates (missing flags) warn (docs/gates.md)."""


class FeaturesConfig(dg.Config):
    dask_min_partitions: int = 400
    """Ranges of at least this many days go to the Dask cluster (always when DASK_SCHEDULER_ADDRESS is
    set). Locally a year fits in memory and pandas in process is faster (bench/chain_bench.py)."""
    days_per_task: int = 31
    """Days per Dask task: enough rows to amortise pandas' per-call overhead."""


def _eager_without_waiting_for_history(label: str) -> dg.AutomationCondition:
    """``on_new_upstream_partition`` that waits for every dependency but ``late_history``.

    A day's history may never come (the first day replayed, a gap): features then get missing history
    features and ``late_history`` starts its 28-day window afresh from yesterday's flights; either is
    rebuilt when the missing state appears (a dependency updated).
    """
    return (
        (dg.AutomationCondition.newly_missing() | dg.AutomationCondition.any_deps_updated()).since_last_handled()
        & ~dg.AutomationCondition.any_deps_missing().ignore(dg.AssetSelection.assets(HISTORY_TABLE.value))
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label(label)


PREVIOUS_DAY = dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1)


@derived_code_version
@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="features",
    kinds={"pandas"},
    deps=[dg.AssetDep(raw_flights, partition_mapping=PREVIOUS_DAY), dg.AssetDep(HISTORY_TABLE.value, partition_mapping=PREVIOUS_DAY),
          airports],
    automation_condition=_eager_without_waiting_for_history("any partition, once yesterday's flights exist"),
    retry_policy=IO_RETRY,
)
def late_history(context: dg.AssetExecutionContext, storage: LakeStorage):
    """Per route and carrier, flights and late arrivals of each of the 28 days before the day: the late rates its features read.

    Incremental: a day's state is the previous day's state, less its oldest day, plus the previous
    day's raw flights (`ml/history.py`); a range folds day by day from the state before its first
    day. A missing previous state (the first day replayed) starts the window afresh.
    """
    import datetime as dt

    from ml.history import history_states
    from resources.parquet_io import Warehouse

    keys = context.partition_keys
    warehouse = Warehouse(storage)
    previous = (dt.date.fromisoformat(keys[0]) - dt.timedelta(days=1)).isoformat()
    before_first = warehouse.frame(HISTORY_TABLE, previous)
    airports = warehouse.frame(Table.AIRPORTS)
    if airports is None:
        raise dg.Failure("late_history: the airports table is missing (arrival times need the destinations' zones); "
                         "materialize `airports` first", allow_retries=False)
    flights = {d: warehouse.frame(Table.RAW_FLIGHTS, d) for d in [previous, *keys[:-1]]}
    states = history_states(keys, flights, airports, before_first)
    if before_first is None:
        context.log.warning(f"late_history: no state for {previous}; {keys[0]} starts its 28-day window afresh")
    return dg.Output(
        states,
        metadata={
            "dagster/row_count": int(sum(len(s) for s in states.values())),
            "days_in_window_of_last": int(states[keys[-1]]["day"].nunique()),
            "started_afresh": before_first is None,
        },
    )


def _check(name: str, outcome, extra: dict | None = None) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=name,
        passed=outcome.passed,
        severity=dg.AssetCheckSeverity.ERROR if FEATURE_CHECK_BLOCKING[name] else dg.AssetCheckSeverity.WARN,
        description=outcome.detail,
        metadata={k.replace("/", "_"): round(v, 5) for k, v in {**outcome.values, **(extra or {})}.items()},
    )


@derived_code_version
@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="features",
    kinds={"pandas", "dask"},
    deps=[raw_flights, raw_weather, planes, airports, late_history],
    check_specs=[
        dg.AssetCheckSpec(MODEL_INPUTS_CHECK, asset="flight_features", blocking=True,
                          description="Every feature column present, keys non-null and unique, labels 0/1/missing, no infinite number."),
        dg.AssetCheckSpec(FEATURE_NULLS_CHECK, asset="flight_features", blocking=FEATURE_CHECK_BLOCKING[FEATURE_NULLS_CHECK],
                          description="Warning: a feature's null share over its limit (ml/feature_checks.py); "
                                      "the model takes missing values, the share per day is observed for its trend."),
        dg.AssetCheckSpec(LABEL_RATE_CHECK, asset="flight_features", blocking=True,
                          description="Share of flights arriving 15+ min late within plausible bounds."),
        dg.AssetCheckSpec(ROW_COUNT_CHECK, asset="flight_features", blocking=True,
                          description="One feature row per raw scheduled flight (cancelled keep a NA label)."),
    ],
    output_required=False,
    automation_condition=_eager_without_waiting_for_history("eager, any partition, late_history may be missing"),
    retry_policy=IO_RETRY,
)
def flight_features(
    context: dg.AssetExecutionContext, config: FeaturesConfig, storage: LakeStorage, dask: DaskCluster
):
    """Each scheduled flight with what is known 15 minutes before its scheduled departure, and whether it arrived 15+ min late.

    Joins the flight with its origin's weather reports, its plane's registry entry and the day so far
    at its origin and for its aircraft (`ml/features.py`, `ml/day_so_far.py`); never uses the flight's
    own dep_time, dep_delay, arr_time, arr_delay or air_time, nor other flights' before they left.
    Cancelled flights stay with a NA label (counted in metadata; training leaves them out).
    The blocking checks run before anything is written: a range that fails them publishes nothing and
    removes the older files of its days. Each file records the raw versions it was built from
    (`built_from`), so training can tell current features from stale ones. A day whose raw flights
    were held back has no features; a day whose weather was held back gets missing weather. Long ranges run on the Dask cluster, a day in process.
    """
    from resources.parquet_io import Warehouse

    dask.require_shared_lake(storage, "flight_features")
    keys = context.partition_keys
    warehouse = Warehouse(storage)
    planes_frame = warehouse.frame(Table.PLANES)
    if planes_frame is None:
        raise dg.Failure("flight_features: the planes table is missing; materialize `planes` first", allow_retries=False)
    versions = {upstream: warehouse.partitions(upstream) for upstream in RAW_UPSTREAMS}
    features, engine = dask.features_for_days(
        storage, keys, versions, planes_frame,
        min_partitions=config.dask_min_partitions, days_per_task=config.days_per_task,
    )
    for key in features.days_without_flights:
        context.log.warning(f"flight_features {key}: raw_flights has no Parquet (held back or not ingested)")
    checks = _feature_checks(features)
    if all(c.passed for c in checks if FEATURE_CHECK_BLOCKING[c.check_name]):
        yield _published(context, keys, features, engine)
    else:
        _withdraw(context, warehouse, keys, checks)
    yield from checks


def _feature_checks(features: FeatureRange) -> list[dg.AssetCheckResult]:
    """Every feature check of the range, blocking or not, before anything is written."""
    from ml import feature_checks

    return [
        _check(MODEL_INPUTS_CHECK, feature_checks.model_inputs_intact(features.frames)),
        _check(FEATURE_NULLS_CHECK, feature_checks.null_shares(features.frames, features.days_without_weather)),
        _check(LABEL_RATE_CHECK, feature_checks.label_rate(features.frames), {"cancelled": float(features.cancelled)}),
        _check(ROW_COUNT_CHECK, feature_checks.row_counts_match(features.frames, features.raw_rows)),
    ]


def _published(context: dg.AssetExecutionContext, keys: list[str], features: FeatureRange, engine: Engine) -> dg.Output:
    """The range's output, each day with its lineage (a day without flights as None: its older file goes),
    after each day's null shares (the trend the UI plots) and lineage are recorded with its partition."""
    from ml import feature_checks
    from resources.parquet_io import BUILT_FROM, FrameWithLineage

    for day, shares in feature_checks.null_shares_by_day(features.frames).items():
        context.log_event(dg.AssetObservation(
            "flight_features", partition=day, metadata={f"null_share_{c}": round(v, 5) for c, v in shares.items()}
        ))
    for day in features.frames:
        context.add_asset_metadata({BUILT_FROM: dg.MetadataValue.json(features.built_from[day])}, partition_key=day)
    return dg.Output(
        {k: FrameWithLineage(features.frames[k], features.built_from[k]) if k in features.frames else None for k in keys},
        metadata={
            "engine": engine,
            "dagster/row_count": features.rows,
            "cancelled_flights": features.cancelled,
            "partitions_without_raw_flights": dg.MetadataValue.json(features.days_without_flights),
            "partitions_without_weather": dg.MetadataValue.json(sorted(features.days_without_weather)),
        },
    )


def _withdraw(context: dg.AssetExecutionContext, warehouse: "Warehouse", keys: list[str], checks: list[dg.AssetCheckResult]) -> None:
    """Publish nothing, and remove the older files of these days: features that fail their blocking checks
    are never where training reads, nor are older ones built from raw data that has changed since."""
    removed = warehouse.remove(Table.FLIGHT_FEATURES, keys)
    context.log.error(
        f"flight_features not written ({len(removed)} older file(s) of these days removed): "
        + "; ".join(f"{c.check_name}: {c.description}" for c in checks if not c.passed and FEATURE_CHECK_BLOCKING[c.check_name])
    )
