"""Features: validated raw days → one row per scheduled flight with pre-departure features and the label."""

import dagster as dg

from ml.tables import Table

from assets.ingest import airports, planes, raw_flights, raw_weather
from assets.partitions import daily_partitions
from assets.policies import IO_RETRY
from ml.feature_days import HISTORY_TABLE, RAW_UPSTREAMS
from assets.versions import code_version
from resources.compute import DaskCluster
from resources.storage import LakeStorage

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


def _features_condition() -> dg.AutomationCondition:
    """``on_new_upstream_partition`` that does not wait for ``late_history``: a day whose state never comes
    (the first day replayed) gets missing history features, and is rebuilt when its state appears."""
    return (
        (dg.AutomationCondition.newly_missing() | dg.AutomationCondition.any_deps_updated()).since_last_handled()
        & ~dg.AutomationCondition.any_deps_missing().ignore(dg.AssetSelection.assets(HISTORY_TABLE))
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("eager, any partition, late_history may be missing")


PREVIOUS_DAY = dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1)


def _history_condition() -> dg.AutomationCondition:
    """Rebuild a day's state when yesterday's flights or state change; only once yesterday's flights exist.

    Yesterday's state may be missing (the first day replayed, a gap): the day then starts afresh from
    yesterday's flights, and is rebuilt when yesterday's state appears.
    """
    return (
        (dg.AutomationCondition.newly_missing() | dg.AutomationCondition.any_deps_updated()).since_last_handled()
        & ~dg.AutomationCondition.any_deps_missing().ignore(dg.AssetSelection.assets(HISTORY_TABLE))
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("any partition, once yesterday's flights exist")


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="features",
    kinds={"pandas"},
    deps=[dg.AssetDep(raw_flights, partition_mapping=PREVIOUS_DAY), dg.AssetDep(HISTORY_TABLE, partition_mapping=PREVIOUS_DAY),
          airports],
    code_version=code_version("ml.history"),
    automation_condition=_history_condition(),
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
    code_version=code_version("ml.features", "ml.day_so_far", "ml.feature_days"),
    output_required=False,
    automation_condition=_features_condition(),
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
    from ml import feature_checks
    from ml.feature_days import features_for_days
    from resources.parquet_io import BUILT_FROM, Warehouse, frame_reader

    if dask.scheduler_address and not storage.is_s3:
        raise dg.Failure(
            f"flight_features: DASK_SCHEDULER_ADDRESS={dask.scheduler_address} but the lake is the local "
            f"folder {storage.url}, which remote workers cannot read; set LAKE_URL to an s3:// lake or unset "
            "DASK_SCHEDULER_ADDRESS",
            allow_retries=False,
        )
    keys = context.partition_keys
    warehouse = Warehouse(storage)
    planes_frame = warehouse.frame(Table.PLANES)
    if planes_frame is None:
        raise dg.Failure("flight_features: the planes table is missing; materialize `planes` first", allow_retries=False)
    versions = {upstream: warehouse.partitions(upstream) for upstream in RAW_UPSTREAMS}
    if len(keys) >= config.dask_min_partitions or dask.scheduler_address:
        read = frame_reader(storage.settings())
        chunks = [keys[i : i + config.days_per_task] for i in range(0, len(keys), config.days_per_task)]
        n = len(chunks)
        with dask.client() as client:
            built = {}
            for part in client.gather(client.map(features_for_days, [read] * n, chunks, [versions] * n, pure=False)):
                built.update(part)
        engine = "dask"
    else:
        built = features_for_days(warehouse.frame, keys, versions, planes_frame)
        engine = "pandas"

    frames = {k: f for k, (f, _, _, _) in built.items() if f is not None}
    no_flights = sorted(k for k, (f, _, _, _) in built.items() if f is None)
    no_weather = {k for k, (f, has_weather, _, _) in built.items() if f is not None and not has_weather}
    raw_rows = {k: rows for k, (f, _, rows, _) in built.items() if f is not None}
    built_from = {k: lineage for k, (f, _, _, lineage) in built.items() if f is not None}
    cancelled = int(sum(f["arrived_late"].isna().sum() for f in frames.values()))
    rows = int(sum(len(f) for f in frames.values()))
    for key in no_flights:
        context.log.warning(f"flight_features {key}: raw_flights has no Parquet (held back or not ingested)")

    checks = [
        _check(MODEL_INPUTS_CHECK, feature_checks.model_inputs_intact(frames)),
        _check(FEATURE_NULLS_CHECK, feature_checks.null_shares(frames, no_weather)),
        _check(LABEL_RATE_CHECK, feature_checks.label_rate(frames), {"cancelled": float(cancelled)}),
        _check(ROW_COUNT_CHECK, feature_checks.row_counts_match(frames, raw_rows)),
    ]
    if all(c.passed for c in checks if FEATURE_CHECK_BLOCKING[c.check_name]):
        for day, shares in feature_checks.null_shares_by_day(frames).items():  # the per-day trend the UI plots
            context.log_event(dg.AssetObservation(
                "flight_features", partition=day, metadata={f"null_share_{c}": round(v, 5) for c, v in shares.items()}
            ))
        for day, frame in frames.items():  # each day's lineage goes with its file and its materialization
            frame.attrs[BUILT_FROM] = built_from[day]
            context.add_asset_metadata({BUILT_FROM: dg.MetadataValue.json(built_from[day])}, partition_key=day)
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
    else:
        # Checks run before publishing: features that fail them are never written where training reads,
        # and older files of these days go too (built from raw data that has changed since).
        removed = warehouse.remove(Table.FLIGHT_FEATURES, keys)
        context.log.error(
            f"flight_features not written ({len(removed)} older file(s) of these days removed): "
            + "; ".join(f"{c.check_name}: {c.description}" for c in checks if not c.passed and FEATURE_CHECK_BLOCKING[c.check_name])
        )
    yield from checks
