"""Training: a time-split window of features → PyTorch model in MLflow → champion by gated alias promotion."""

from dataclasses import dataclass, field

import dagster as dg

from ml.tables import Table

from assets.features import RAW_UPSTREAMS, flight_features
from assets.partitions import daily_partitions
from assets.policies import IO_RETRY
from ml.gates import BASELINE_TOLERANCE, CHAMPION_TOLERANCE
from assets.versions import code_version
from resources.compute import DaskCluster, TorchCompute
from resources.kubernetes import training_step_op_tags
from resources.mlflow_registry import MlflowRegistry
from resources.parquet_io import RUN_SCOPED
from resources.storage import LakeStorage
from resources.trainer import DistributedTrainer

BASELINE_CHECK = "reaches_baseline"
CHAMPION_CHECK = "not_worse_than_champion"
BEHAVIOUR_CHECK = "behavioural_tests"


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
    deps=[flight_features, "raw_flights", "raw_weather"],  # their stored versions decide which days are current
    code_version=code_version("ml.dataset"),
    metadata={RUN_SCOPED: True},
    retry_policy=IO_RETRY,
)
def training_set(
    context: dg.AssetExecutionContext, config: TrainingWindowConfig, storage: LakeStorage, dask: DaskCluster
):
    """A rolling window of feature days, split by time into train, validation and test.

    Read with `dd.read_parquet` over the window's partitions (`DaskCluster.compute`: the remote scheduler
    when one is set, else Dask's threads in process); cancelled flights
    (no label) are left out. A day is used only if its features were built from the raw days stored
    now: a raw day held back or rewritten since leaves stale features, which are excluded and named
    in `days_excluded`, never trained on. The fingerprint hashes the partitions and their stored
    versions; it goes to MLflow with the model trained on it. Stored per run
    (`warehouse/training_set/<run_id>.parquet`), so two trainings never share a window.
    """
    from ml.dataset import SPLIT, WindowSpec, assign_splits, fingerprint, split_days, unusable_days, window_days
    from resources.parquet_io import BUILT_FROM, Warehouse

    warehouse = Warehouse(storage)
    current = {upstream: warehouse.partitions(upstream) for upstream in RAW_UPSTREAMS}
    stored = warehouse.partitions(Table.FLIGHT_FEATURES)
    candidates = [d for d in set(stored) | set(current["raw_flights"]) if daily_partitions.has_partition_key(d)]
    spec = WindowSpec(config.window_days, config.cutoff, config.validation_days, config.test_days)
    in_window = window_days(candidates, spec)
    footers = warehouse.footers(Table.FLIGHT_FEATURES, [d for d in in_window if d in stored])
    built_from = {d: (footer or {}).get(BUILT_FROM) for d, footer in footers.items()}
    excluded = unusable_days(in_window, built_from, current)
    days = [d for d in in_window if d not in excluded]
    for day, reason in excluded.items():
        context.log.warning(f"training_set: {day} left out: {reason}")
    if not days:
        raise dg.Failure(
            f"training_set: no usable flight_features days in the window ending {spec.cutoff or 'at the newest day'} "
            f"under {warehouse.uri(Table.FLIGHT_FEATURES)}: {dict(list(excluded.items())[:5])}; "
            "materialize flight_features for these days",
            allow_retries=False,
        )
    splits = split_days(days, spec)
    frame = dask.compute(warehouse.dask_frame(Table.FLIGHT_FEATURES, days).map_partitions(assign_splits, splits))
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
    amp: bool = False
    """Mixed precision (float16 + GradScaler on CUDA, bfloat16 on CPU)."""
    baseline_tolerance: float = BASELINE_TOLERANCE
    """The candidate's test ROC AUC may be at most this far below the baseline's."""
    champion_tolerance: float = CHAMPION_TOLERANCE
    """… and at most this far below the current champion's, on the same test set."""
    behaviour_sample: int = 2000


@dataclass
class RegisteredCandidate:
    metadata: dict
    checks: list = field(default_factory=list)


def _champion_scores(registry: MlflowRegistry, version: str | None, test):
    """The current champion's scores on the candidate's test set (same rows, same labels).

    The champion's unit is verified against the digest recorded at its registration: a tampered or
    pickled champion fails the run (UnitIntegrityError) instead of judging the candidate.
    """
    if version is None:
        return None
    from ml.model import UnitIntegrityError
    from infra.redaction import redact

    try:
        unit = registry.load_unit(version)
    except UnitIntegrityError as exc:
        raise dg.Failure(
            description=redact(f"delay_model: the champion v{version} is refused, so no candidate can be judged "
                               f"against it: {exc}; restore or retrain it, or move the champion alias"),
            allow_retries=False,
        ) from None
    return unit.predict_proba(test)


def evaluate_and_register(
    context, config, training_set, registry: MlflowRegistry, compute, trainer: DistributedTrainer | None = None
) -> RegisteredCandidate:
    """Train (with ``trainer``'s launcher; in process without one), score the model, the baseline and the
    champion on the same test days, judge, register."""
    import time
    from dataclasses import asdict

    from ml.dataset import SPLIT, TEST, TRAIN, VALIDATION
    from ml.drift import reference_sample
    from ml.evaluate import Baseline, behavioural_suite, classification_metrics, labels
    from ml.features import FEATURE_COLUMNS
    from ml.promotion import KEEP_CHAMPION, judge
    from ml.train import TrainConfig
    from infra import settings

    parts = {name: training_set[training_set[SPLIT] == name] for name in (TRAIN, VALIDATION, TEST)}
    for name, part in parts.items():
        if part.empty:
            raise dg.Failure(f"delay_model: the {name} split of training_set is empty", allow_retries=False)
    device = compute.torch_device()
    train_config = TrainConfig(
        epochs=config.epochs, batch_size=config.batch_size, learning_rate=config.learning_rate,
        patience=config.patience, seed=config.seed, amp=config.amp,
    )
    trainer = trainer or DistributedTrainer()
    started = time.perf_counter()
    launched = trainer.train(context, parts[TRAIN], parts[VALIDATION], train_config, device)
    train_seconds = time.perf_counter() - started
    trained = launched.result
    test, y_test = parts[TEST], labels(parts[TEST])
    model_metrics = classification_metrics(y_test, trained.unit.predict_proba(test))
    baseline = Baseline(seed=config.seed).fit(parts[TRAIN])
    baseline_metrics = classification_metrics(y_test, baseline.predict_proba(test))

    champion = registry.champion_version()
    champion_scores = _champion_scores(registry, champion, test)
    champion_metrics = classification_metrics(y_test, champion_scores) if champion_scores is not None else None
    sample = test.sample(min(config.behaviour_sample, len(test)), random_state=config.seed)
    behaviour = behavioural_suite(trained.unit.predict_proba, sample)
    importance = _importance(trained.unit, test, y_test, config.seed)
    verdict = judge(
        model_metrics["roc_auc"], baseline_metrics["roc_auc"],
        champion_metrics["roc_auc"] if champion_metrics else None, behaviour, champion_version=champion,
        baseline_tolerance=config.baseline_tolerance, champion_tolerance=config.champion_tolerance,
    )

    fingerprint = _upstream_fingerprint(context)
    trained.unit.info = {"data_fingerprint": fingerprint, "test_roc_auc": model_metrics["roc_auc"]}
    candidate = registry.log_candidate(
        unit=trained.unit,
        example=test[list(FEATURE_COLUMNS)].head(20),
        run_name=f"delay_model {context.run_id[:8]}",
        params={
            **config.model_dump(),
            "hidden": str(trained.unit.config.hidden),
            "members": trained.unit.config.members,
            "dropout": trained.unit.config.dropout,
            "device": trained.device,
            "best_epoch": trained.best_epoch,
            "train_rows": len(parts[TRAIN]),
            "train_processes": launched.processes,
            "train_launcher": launched.launcher,
        },
        epoch_metrics=[asdict(stats) for stats in trained.history],
        test_metrics=model_metrics,
        baseline_metrics=baseline_metrics,
        champion_metrics=champion_metrics,
        evaluated_against=champion,
        verdict=verdict,
        reference=reference_sample(parts[TRAIN]),
        data_fingerprint=fingerprint,
        code_version=settings.code_version(),
        dagster_run_id=context.run_id,
        device=trained.device,
    )
    registry.log_importance(candidate.run_id, *importance)
    champion_importance = registry.importance(champion) if champion else None

    samples_per_s = max((h.samples_per_s for h in trained.history), default=0.0)
    metadata = {
        "model_version": candidate.version,
        "model_uri": candidate.model_uri,
        "mlflow_run": registry.run_link_value(candidate.run_id),
        "unit_sha256": registry.registered_digest(candidate.version),
        "mlflow_run_id": candidate.run_id,
        "evaluated_against_champion": champion or "none",
        "test_roc_auc": round(model_metrics["roc_auc"], 4),
        "test_pr_auc": round(model_metrics["pr_auc"], 4),
        "test_log_loss": round(model_metrics["log_loss"], 4),
        "test_ece": round(model_metrics["ece"], 4),
        "temperature": round(trained.unit.temperature, 4),
        "baseline_test_roc_auc": round(baseline_metrics["roc_auc"], 4),
        "champion_test_roc_auc": round(champion_metrics["roc_auc"], 4) if champion_metrics else "n/a",
        "best_epoch": trained.best_epoch,
        "epochs_run": len(trained.history),
        "ensemble_members": trained.unit.config.members,
        "train_seconds": round(train_seconds, 1),
        "train_samples_per_s": round(samples_per_s),
        "device": trained.device,
        "data_fingerprint": fingerprint,
        "verdict": verdict.outcome,
        "verdict_reasons": "; ".join(verdict.reasons) or "none",
        **{k: v for k, v in launched.reported.items() if k.startswith("train_")},
        "train_processes": launched.processes,
        "feature_importance": _importance_table(importance[1], champion, champion_importance),
    }
    # WARN while a champion serves: the candidate is not promoted and the champion stays (an outcome);
    # ERROR with no champion to fall back on, where nothing would serve.
    kept = verdict.outcome == KEEP_CHAMPION
    checks = [
        dg.AssetCheckResult(
            check_name=BASELINE_CHECK, passed=verdict.beats_baseline,
            severity=dg.AssetCheckSeverity.WARN if kept else dg.AssetCheckSeverity.ERROR,
            description=f"model {model_metrics['roc_auc']:.4f} vs baseline {baseline_metrics['roc_auc']:.4f} (tolerance {config.baseline_tolerance})"
                        f"{': not promoted, the champion stays' if kept and not verdict.beats_baseline else ''}",
            metadata={"model_roc_auc": model_metrics["roc_auc"], "baseline_roc_auc": baseline_metrics["roc_auc"]},
        ),
        # WARN: a sound candidate that is not better is an outcome (champion_model keeps the champion), not a fault.
        dg.AssetCheckResult(
            check_name=CHAMPION_CHECK, passed=verdict.beats_champion, severity=dg.AssetCheckSeverity.WARN,
            description=(
                f"model {model_metrics['roc_auc']:.4f} vs champion v{champion} {champion_metrics['roc_auc']:.4f}"
                f"{'' if verdict.beats_champion else ': not promoted, the champion stays'}"
                if champion_metrics else "no champion yet"
            ),
            metadata={"champion_version": champion or "none", "verdict": verdict.outcome},
        ),
        dg.AssetCheckResult(
            check_name=BEHAVIOUR_CHECK, passed=verdict.behaves,
            description="; ".join(f"{b.name}: {'ok' if b.passed else 'FAILED'} ({b.detail})" for b in behaviour),
        ),
    ]
    return RegisteredCandidate(metadata=metadata, checks=checks)


def _importance(unit, test, y_test, seed: int) -> tuple[float, list[dict], str]:
    """Permutation importance by feature group on the test set: (test ROC AUC, rows, markdown table)."""
    from ml.importance import as_records, feature_groups, markdown_table, permutation_importance

    features = [*unit.preprocessor.categorical, *unit.preprocessor.numeric]
    auc, groups = permutation_importance(unit.predict_proba, test, y_test, feature_groups(features), seed=seed)
    return auc, as_records(groups), markdown_table(auc, groups)


def _importance_table(groups: list[dict], champion: str | None, champion_importance: dict | None):
    """The groups as a table the UI renders, beside the champion's drop for the same group where it has one."""
    theirs = {g["group"]: g["auc_drop"] for g in (champion_importance or {}).get("groups", [])}
    column = f"champion v{champion} drop" if champion else "champion drop"
    return dg.MetadataValue.table(
        records=[
            dg.TableRecord({"group": g["group"], "roc_auc_drop": round(g["auc_drop"], 4), "std": round(g["auc_drop_std"], 4),
                            column: round(theirs[g["group"]], 4) if g["group"] in theirs else None,
                            "features": ", ".join(g["features"])})
            for g in groups
        ],
        schema=dg.TableSchema(columns=[
            dg.TableColumn("group", "string"), dg.TableColumn("roc_auc_drop", "float"), dg.TableColumn("std", "float"),
            dg.TableColumn(column, "float"), dg.TableColumn("features", "string"),
        ]),
    )


def _upstream_fingerprint(context) -> str:
    metadata = materialization_metadata(context, "training_set") or {}
    value = metadata.get("data_fingerprint")
    return str(value.value) if value is not None else "unknown"


@dg.asset(
    group_name="training",
    kinds={"pytorch", "mlflow", "scikitlearn"},
    pool="training",
    op_tags=training_step_op_tags(),  # the GPU pod on Kubernetes (TRAINING_* settings); ignored elsewhere
    check_specs=[
        # Blocking at ERROR only: WARN while a champion serves (not promoted, the champion stays), ERROR without one.
        dg.AssetCheckSpec(BASELINE_CHECK, asset="delay_model", blocking=True,
                          description="Test ROC AUC within the tolerance of the HistGradientBoosting baseline, or better; "
                                      "failing while a champion serves (WARN) means not promoted, and the run still succeeds."),
        # Blocking at ERROR only: its verdict is WARN (not promoted is an outcome; champion_model acts on it).
        dg.AssetCheckSpec(CHAMPION_CHECK, asset="delay_model", blocking=True,
                          description="Test ROC AUC not below the current champion's on the same test set; "
                                      "failing (WARN) means not promoted, and the run still succeeds."),
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
    registry: MlflowRegistry,
    compute: TorchCompute,
    trainer: DistributedTrainer,
):
    """The PyTorch delay model, trained on `training_set` and registered in MLflow as a new version.

    Embeddings for carrier, origin and dest beside standardised numeric features with missing flags;
    early stopping on validation; preprocessing saved with the weights as one unit (`ml/model.py`).
    MLflow gets params, per-epoch metrics, test ROC AUC / PR AUC / log loss of the model and of the
    HistGradientBoosting baseline, the data fingerprint, the code version and the Dagster run id, and the
    permutation importance by feature group on the test set (`feature_importance` here, beside the champion's;
    an artifact and `importance_<group>` metrics in MLflow; docs/explainability.md).
    A version that fails its checks stays registered, tagged with the reason, and never becomes champion.
    The window must be the `training_set` of this run (same run, same fingerprint), else it fails.
    Trained in process by default, or data-parallel (DDP under torchrun, here or in a GPU pod, through
    Dagster Pipes) as `trainer` says (`TRAINING_LAUNCHER`, `TRAINING_PROCESSES`; docs/distributed-training.md).
    """
    verify_own_window(context, training_set)
    result = evaluate_and_register(context, config, training_set, registry, compute, trainer)
    yield dg.MaterializeResult(metadata=result.metadata)
    for check in result.checks:
        yield check


OUTCOME_TAG = "training/outcome"
"""Run tag champion_model sets on a training run: PROMOTED or NOT_PROMOTED (the retraining sensor's history)."""
WINDOW_LAST_DAY_TAG = "training/window_last_day"
PROMOTED, NOT_PROMOTED = "promoted", "not_promoted"


@dg.asset(group_name="training", kinds={"mlflow"}, deps=[delay_model], pool="champion_promotion",
          code_version=code_version("ml.promotion", "ml.gates"), retry_policy=IO_RETRY, output_required=False)
def champion_model(context: dg.AssetExecutionContext, registry: MlflowRegistry):
    """The registered version behind the `champion` alias: what serving loads.

    Promotes the `delay_model` version of this run (or the newest one, when run alone) once its
    checks passed, by compare-and-swap:
    only if the champion is still the one the candidate was compared with, so two trainings cannot
    both win. The version records previous_version, promoted_by and the reason as tags.

    A well-behaved candidate that is not better than the champion, or below the baseline while a champion
    serves (verdict ``keep_champion``), is a completed evaluation: nothing is materialized (so no Bento is
    built downstream), an observation records "not promoted" and why, and the run succeeds. A misbehaving
    candidate, or one below the baseline with no champion, fails the run.
    The outcome is tagged on the run (``training/outcome``) for the retraining sensor.
    """
    from ml.promotion import KEEP_CHAMPION

    metadata = materialization_metadata(context, "delay_model")
    if metadata is None:
        raise dg.Failure("champion_model: delay_model has never been materialized", allow_retries=False)
    candidate = registry.candidate(str(metadata["model_version"].value))
    window = materialization_metadata(context, "training_set") or {}
    window_tag = {WINDOW_LAST_DAY_TAG: str(window["last_day"].value)} if "last_day" in window else {}
    if not candidate.passed:
        verdict = metadata["verdict"].value if "verdict" in metadata else None
        if verdict != KEEP_CHAMPION:
            raise dg.Failure(f"champion_model: v{candidate.version} did not pass its checks: {candidate.reason or None}",
                             allow_retries=False)
        champion = registry.champion_version()
        context.log.info(f"champion_model: v{candidate.version} not promoted ({candidate.reason}); "
                         f"champion v{champion} stays")
        context.log_event(dg.AssetObservation(asset_key=context.asset_key, metadata={
            "promoted": False,
            "candidate_version": candidate.version,
            "champion_version": champion or "none",
            "reason": candidate.reason,
            "mlflow_run": registry.run_link(candidate.run_id),
        }))
        context.instance.add_run_tags(context.run_id, {OUTCOME_TAG: NOT_PROMOTED, **window_tag})
        return
    expected = candidate.evaluated_against
    reason = (
        f"test ROC AUC {_auc(candidate.test_roc_auc)} vs baseline {_auc(candidate.baseline_roc_auc)}"
        f" and champion v{expected or 'none'} {_auc(candidate.champion_roc_auc)}"
    )
    previous = registry.promote(candidate, expected, promoted_by=f"dagster run {context.run_id}", reason=reason)
    context.instance.add_run_tags(context.run_id, {OUTCOME_TAG: PROMOTED, **window_tag})
    yield dg.MaterializeResult(
        metadata={
            "champion_version": candidate.version,
            "mlflow_run": registry.run_link(candidate.run_id),
            "previous_version": previous or "none",
            "model_uri": registry.champion_uri(),
            "reason": reason,
        }
    )


def _auc(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
