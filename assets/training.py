"""Training: a time-split window of features → PyTorch model in MLflow → champion by gated alias promotion."""

import dagster as dg

from assets.features import RAW_UPSTREAMS, flight_features
from assets.partitions import daily_partitions
from assets.policies import IO_RETRY
from assets.versions import code_version
from resources.compute import DaskCluster, TorchCompute
from resources.mlflow_registry import MlflowRegistry
from resources.parquet_io import RUN_SCOPED
from resources.storage import LakeStorage

from assets.model_registry import BASELINE_CHECK, BEHAVIOUR_CHECK, CHAMPION_CHECK


def materialization_record(context: dg.AssetExecutionContext, asset: str) -> tuple[str, dict] | None:
    """``(run_id, metadata)`` of ``asset`` as materialized by this run (or the run it re-executes), else its latest.

    Reading "the latest" alone would let a concurrent run's model or window slip in between steps.
    """
    key = dg.AssetKey(asset)
    run_id = context.run_id
    while run_id:
        records = context.instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
        for record in reversed(records):
            if record.asset_key == key and record.asset_materialization is not None:
                return run_id, record.asset_materialization.metadata
        run = context.instance.get_run_by_id(run_id)
        run_id = run.parent_run_id if run is not None else None
    event = context.instance.get_latest_materialization_event(key)
    return (event.run_id, event.asset_materialization.metadata) if event and event.asset_materialization else None


def materialization_metadata(context: dg.AssetExecutionContext, asset: str) -> dict | None:
    """Metadata of ``asset`` as materialized by this run, or its latest when this run did not make it."""
    record = materialization_record(context, asset)
    return record[1] if record else None


def verify_own_window(context: dg.AssetExecutionContext, window) -> str:
    """The fingerprint of ``window`` after checking it is the `training_set` this run stands on.

    The loaded file names the run that wrote it and the window's fingerprint; both must match the
    `training_set` materialization this run sees, else a concurrent or restored window would be
    trained on and reported under another window's name.
    """
    from resources.parquet_io import FINGERPRINT, FOOTER_ATTR

    record = materialization_record(context, "training_set")
    if record is None:
        raise dg.Failure("delay_model: training_set has never been materialized; materialize it first",
                         allow_retries=False)
    expected_run, metadata = record
    expected = str(metadata[FINGERPRINT].value) if FINGERPRINT in metadata else None
    footer = window.attrs.get(FOOTER_ATTR) or {}
    found_run, found = footer.get("run_id"), footer.get(FINGERPRINT)
    if (found_run, found) != (expected_run, expected):
        raise dg.Failure(
            f"delay_model: the training window loaded (run {found_run}, fingerprint {found}) is not the "
            f"training_set materialized by run {expected_run} (fingerprint {expected}); another run's or a "
            "restored window was in its place. Rematerialize training_set together with delay_model "
            "(training_job) and do not copy windows between runs.",
            allow_retries=False,
        )
    return expected


class TrainingWindowConfig(dg.Config):
    window_days: int = 120
    """Days of features in the window, ending at the cutoff."""
    cutoff: str | None = None
    """Last day in the window (YYYY-MM-DD); default: the newest feature partition."""
    validation_days: int | None = None
    """Days before the test days used for early stopping; default 15 % of the window."""
    test_days: int | None = None
    """Last days of the window held out for evaluation; default 15 % of the window."""


@dg.asset(
    group_name="training",
    kinds={"dask", "parquet"},
    deps=[flight_features],
    code_version=code_version("ml.dataset"),
    metadata={RUN_SCOPED: True},
    retry_policy=IO_RETRY,
)
def training_set(
    context: dg.AssetExecutionContext, config: TrainingWindowConfig, storage: LakeStorage, dask: DaskCluster
):
    """A rolling window of feature days, split by time into train, validation and test.

    Read with `dd.read_parquet` over the window's partitions on the Dask cluster; cancelled flights
    (no label) are left out. A day is used only if its features were built from the raw days stored
    now: a raw day held back or rewritten since leaves stale features, which are excluded and named
    in `days_excluded`, never trained on. The fingerprint hashes the partitions and their stored
    versions; it goes to MLflow with the model trained on it. Stored per run
    (`warehouse/training_set/<run_id>.parquet`), so two trainings never share a window.
    """
    import dask.dataframe as dd

    from ml.dataset import SPLIT, WindowSpec, assign_splits, fingerprint, split_days, unusable_days, window_days
    from resources.parquet_io import BUILT_FROM, read_footers, stored_partitions, warehouse_key

    current = {upstream: stored_partitions(storage, upstream) for upstream in RAW_UPSTREAMS}
    stored = stored_partitions(storage, "flight_features")
    candidates = [d for d in set(stored) | set(current["raw_flights"]) if daily_partitions.has_partition_key(d)]
    spec = WindowSpec(config.window_days, config.cutoff, config.validation_days, config.test_days)
    in_window = window_days(candidates, spec)
    footers = read_footers(storage, "flight_features", [d for d in in_window if d in stored])
    built_from = {d: (footer or {}).get(BUILT_FROM) for d, footer in footers.items()}
    excluded = unusable_days(in_window, built_from, current)
    days = [d for d in in_window if d not in excluded]
    for day, reason in excluded.items():
        context.log.warning(f"training_set: {day} left out: {reason}")
    if not days:
        raise dg.Failure(
            f"training_set: no usable flight_features days in the window ending {spec.cutoff or 'at the newest day'} "
            f"under {storage.uri(warehouse_key('flight_features'))}: {dict(list(excluded.items())[:5])}; "
            "materialize flight_features for these days",
            allow_retries=False,
        )
    splits = split_days(days, spec)
    paths = [storage.uri(warehouse_key("flight_features", d)) for d in days]
    with dask.client():
        features = dd.read_parquet(paths, storage_options=storage.storage_options() or None)
        frame = features.map_partitions(assign_splits, splits).compute()
    frame = frame.reset_index(drop=True)
    per_split = frame.groupby(SPLIT)["arrived_late"].agg(["size", "mean"])
    return dg.Output(
        frame,
        metadata={
            "data_fingerprint": fingerprint({d: stored[d] for d in days}),
            "first_day": days[0],
            "last_day": days[-1],
            "days": len(days),
            "days_excluded": dg.MetadataValue.json(excluded),
            "dagster/row_count": len(frame),
            "rows_per_split": dg.MetadataValue.json({k: int(v) for k, v in per_split["size"].items()}),
            "late_rate_per_split": dg.MetadataValue.json({k: round(float(v), 4) for k, v in per_split["mean"].items()}),
            "split_days": dg.MetadataValue.json({s: [min(d for d, x in splits.items() if x == s), max(d for d, x in splits.items() if x == s)] for s in set(splits.values())}),
        },
    )


class DelayModelConfig(dg.Config):
    epochs: int = 30
    batch_size: int = 4096
    learning_rate: float = 3e-3
    patience: int = 4
    seed: int = 7
    baseline_tolerance: float = 0.01
    """The candidate's test ROC AUC may be at most this far below the baseline's."""
    champion_tolerance: float = 0.0
    """… and at most this far below the current champion's, on the same test set."""
    behaviour_sample: int = 2000


@dg.asset(
    group_name="training",
    kinds={"pytorch", "mlflow", "scikitlearn"},
    pool="training",
    check_specs=[
        dg.AssetCheckSpec(BASELINE_CHECK, asset="delay_model", blocking=True,
                          description="Test ROC AUC within the tolerance of the HistGradientBoosting baseline, or better."),
        dg.AssetCheckSpec(CHAMPION_CHECK, asset="delay_model", blocking=True,
                          description="Test ROC AUC not below the current champion's on the same test set."),
        dg.AssetCheckSpec(BEHAVIOUR_CHECK, asset="delay_model", blocking=True,
                          description="Invariance to flight number, heavy rain does not lower delay, obvious cases."),
    ],
    code_version=code_version("ml.train", "ml.model", "ml.preprocess", "ml.evaluate"),
    retry_policy=IO_RETRY,
)
def delay_model(
    context: dg.AssetExecutionContext,
    config: DelayModelConfig,
    training_set,
    mlflow: MlflowRegistry,
    compute: TorchCompute,
):
    """The PyTorch delay model, trained on `training_set` and registered in MLflow as a new version.

    Embeddings for carrier, origin and dest beside standardised numeric features with missing flags;
    early stopping on validation; preprocessing saved with the weights as one unit (`ml/model.py`).
    MLflow gets params, per-epoch metrics, test ROC AUC / PR AUC / log loss of the model and of the
    HistGradientBoosting baseline, the data fingerprint, the code version and the Dagster run id.
    A version that fails its checks stays registered, tagged with the reason, and never becomes champion.
    The window must be the `training_set` of this run (same run, same fingerprint), else it fails.
    """
    from assets.model_registry import evaluate_and_register

    verify_own_window(context, training_set)
    result = evaluate_and_register(context, config, training_set, mlflow, compute)
    yield dg.MaterializeResult(metadata=result.metadata)
    for check in result.checks:
        yield check


@dg.asset(group_name="training", kinds={"mlflow"}, deps=[delay_model], pool="champion_promotion", code_version="1", retry_policy=IO_RETRY)
def champion_model(context: dg.AssetExecutionContext, mlflow: MlflowRegistry):
    """The registered version behind the `champion` alias: what serving loads.

    Promotes the `delay_model` version of this run (or the newest one, when run alone) once its
    blocking checks passed, by compare-and-swap:
    only if the champion is still the one the candidate was compared with, so two trainings cannot
    both win. The version records previous_version, promoted_by and the reason as tags.
    """
    from resources.mlflow_registry import CHAMPION_ALIAS

    metadata = materialization_metadata(context, "delay_model")
    if metadata is None:
        raise dg.Failure("champion_model: delay_model has never been materialized", allow_retries=False)
    version = str(metadata["model_version"].value)
    expected = str(metadata["evaluated_against_champion"].value)
    expected = None if expected == "none" else expected
    tags = mlflow.client().get_model_version(mlflow.model_name, version).tags
    if tags.get("candidate_status") != "passed":
        raise dg.Failure(f"champion_model: v{version} did not pass its checks: {tags.get('rejection_reason')}", allow_retries=False)
    reason = (
        f"test ROC AUC {tags.get('test_roc_auc')} vs baseline {tags.get('baseline_test_roc_auc')}"
        f" and champion v{expected or 'none'} {tags.get('champion_test_roc_auc', 'n/a')}"
    )
    previous = mlflow.promote(version, expected, promoted_by=f"dagster run {context.run_id}", reason=reason)
    run_id = mlflow.client().get_model_version(mlflow.model_name, version).run_id
    return dg.MaterializeResult(
        metadata={
            "champion_version": version,
            "mlflow_run": mlflow.run_link(run_id),
            "previous_version": previous or "none",
            "model_uri": f"models:/{mlflow.model_name}@{CHAMPION_ALIAS}",
            "reason": reason,
        }
    )
