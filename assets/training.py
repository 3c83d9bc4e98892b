"""Training: a time-split window of features → PyTorch model in MLflow → champion by gated alias promotion."""

from dataclasses import dataclass, field

import dagster as dg

from assets.features import RAW_UPSTREAMS, flight_features
from assets.partitions import daily_partitions
from assets.policies import IO_RETRY
from assets.run_tags import TrainingOutcome, TrainingRunTags
from assets.versions import derived_code_version
from ml.gates import BASELINE_TOLERANCE, PROMOTION_CONFIDENCE, PROMOTION_MARGIN
from ml.tables import Table
from resources.compute import DaskCluster, TorchCompute
from resources.kubernetes import training_step_op_tags
from resources.mlflow_registry import Candidate, MlflowRegistry, Provenance
from resources.parquet_io import RUN_SCOPED, verify_run_scoped_input
from resources.storage import LakeStorage
from resources.trainer import DistributedTrainer

BASELINE_CHECK = "reaches_baseline"
CHAMPION_CHECK = "not_worse_than_champion"
BEHAVIOUR_CHECK = "behavioural_tests"


class TrainingWindowConfig(dg.Config):
    window_days: int = 120
    """Days of features in the window, ending at the cutoff."""
    cutoff: str | None = None
    """Last day in the window (YYYY-MM-DD); default: the newest feature partition."""
    validation_days: int | None = None
    """Days before the test days used for early stopping; default 15 % of the window."""
    test_days: int | None = None
    """Last days of the window held out for evaluation; default 15 % of the window."""


@derived_code_version
@dg.asset(
    group_name="training",
    kinds={"dask", "parquet"},
    deps=[flight_features, "raw_flights", "raw_weather"],  # their stored versions decide which days are current
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
    promotion_confidence: float = PROMOTION_CONFIDENCE
    """Level of the paired interval of the candidate's ROC AUC gain over the champion, on the same test flights."""
    promotion_margin: float = PROMOTION_MARGIN
    """… whose lower bound must lie above this for the candidate to be promoted."""
    behaviour_sample: int = 2000


@dataclass(frozen=True)
class RegisteredCandidate:
    """What delay_model yields: the registered candidate, its metadata and its checks."""

    candidate: Candidate
    metadata: dict
    checks: list = field(default_factory=list)


def evaluate_and_register(
    context, config, training_set, registry: MlflowRegistry, compute, trainer: DistributedTrainer | None = None,
    fingerprint: str = "unknown",
) -> RegisteredCandidate:
    """Train (with ``trainer``'s launcher; in process without one), evaluate against the baseline and the
    champion on the same test days (``ml.evaluation``), register the evaluated candidate."""
    import time

    from infra import settings
    from ml.dataset import TEST, TRAIN, VALIDATION
    from ml.evaluation import evaluate_candidate

    parts = _splits(training_set)
    started = time.perf_counter()
    launched = (trainer or DistributedTrainer()).train(
        context, parts[TRAIN], parts[VALIDATION], _train_config(config), compute.torch_device())
    train_seconds = time.perf_counter() - started
    trained = launched.result
    champion = _champion_for_judging(registry)
    evaluation = evaluate_candidate(
        trained.unit.predict_proba, [*trained.unit.preprocessor.categorical, *trained.unit.preprocessor.numeric],
        parts[TRAIN], parts[TEST],
        champion_score=champion.unit.predict_proba if champion else None,
        champion_version=champion.version if champion else None, settings=_evaluation_settings(config),
    )
    trained.unit.info = {"data_fingerprint": fingerprint, "test_roc_auc": evaluation.roc_auc}
    candidate = registry.register(evaluation, trained, Provenance(
        run_name=f"delay_model {context.run_id[:8]}", params=_params(config, launched, len(parts[TRAIN])),
        data_fingerprint=fingerprint, code_version=settings.project().current_code_version(), dagster_run_id=context.run_id,
        window_last_day=str(training_set["date"].max()),
    ))
    metadata = {
        **candidate_metadata(candidate, evaluation, trained, launched, train_seconds),
        "mlflow_run": dg.MetadataValue.url(candidate.run_link) if candidate.run_link.startswith("http") else candidate.run_link,
        "feature_importance": _importance_table(evaluation.importance.groups, champion),
    }
    return RegisteredCandidate(candidate, metadata, evaluation_checks(evaluation))


def _splits(training_set) -> dict:
    from ml.dataset import SPLIT, TEST, TRAIN, VALIDATION

    parts = {name: training_set[training_set[SPLIT] == name] for name in (TRAIN, VALIDATION, TEST)}
    for name, part in parts.items():
        if part.empty:
            raise dg.Failure(f"delay_model: the {name} split of training_set is empty", allow_retries=False)
    return parts


def _train_config(config: "DelayModelConfig"):
    from ml.train import TrainConfig

    return TrainConfig(epochs=config.epochs, batch_size=config.batch_size, learning_rate=config.learning_rate,
                       patience=config.patience, seed=config.seed, amp=config.amp)


def _evaluation_settings(config: "DelayModelConfig"):
    from ml.evaluation import EvaluationSettings

    return EvaluationSettings(seed=config.seed, behaviour_sample=config.behaviour_sample,
                              baseline_tolerance=config.baseline_tolerance,
                              promotion_confidence=config.promotion_confidence, promotion_margin=config.promotion_margin)


def _params(config: "DelayModelConfig", launched, train_rows: int) -> dict:
    trained = launched.result
    return {
        **config.model_dump(),
        "hidden": str(trained.unit.config.hidden), "members": trained.unit.config.members,
        "dropout": trained.unit.config.dropout, "device": trained.device, "best_epoch": trained.best_epoch,
        "train_rows": train_rows, "train_processes": launched.processes, "train_launcher": launched.launcher,
    }


def _champion_for_judging(registry: MlflowRegistry):
    """The champion to judge against (None without one); a tampered or pickled champion fails the run."""
    from infra.redaction import redact
    from ml.model import UnitIntegrityError

    try:
        return registry.champion_for_judging()
    except UnitIntegrityError as exc:
        raise dg.Failure(
            description=redact(f"delay_model: the champion is refused, so no candidate can be judged against it: "
                               f"{exc}; restore or retrain it, or move the champion alias"),
            allow_retries=False,
        ) from None


def candidate_metadata(candidate: Candidate, evaluation, trained, launched, train_seconds: float) -> dict:
    """The registered candidate's figures as the materialization shows them."""
    return {
        "model_version": candidate.version,
        "model_uri": candidate.model_uri,
        "unit_sha256": candidate.unit_digest,
        "mlflow_run_id": candidate.run_id,
        **evaluation.summary(),
        "temperature": round(trained.unit.temperature, 4),
        "best_epoch": trained.best_epoch,
        "epochs_run": len(trained.history),
        "ensemble_members": trained.unit.config.members,
        "train_seconds": round(train_seconds, 1),
        "train_samples_per_s": round(max((h.samples_per_s for h in trained.history), default=0.0)),
        "device": trained.device,
        "data_fingerprint": candidate.data_fingerprint,
        **{k: v for k, v in launched.reported.items() if k.startswith("train_")},
        "train_processes": launched.processes,
    }


def evaluation_checks(evaluation) -> list[dg.AssetCheckResult]:
    """The three blocking checks, from the evaluation's verdict.

    The baseline check is WARN while a champion serves (the candidate is not promoted and the champion
    stays: an outcome), ERROR with no champion to fall back on, where nothing would serve. The champion
    check is WARN: a sound candidate that is not better is an outcome, not a fault.
    """
    from ml.promotion import KEEP_CHAMPION

    verdict = evaluation.verdict
    kept = verdict.outcome == KEEP_CHAMPION
    not_promoted = ": not promoted, the champion stays"
    return [
        dg.AssetCheckResult(
            check_name=BASELINE_CHECK, passed=verdict.beats_baseline,
            severity=dg.AssetCheckSeverity.WARN if kept else dg.AssetCheckSeverity.ERROR,
            description=evaluation.baseline_description() + (not_promoted if kept and not verdict.beats_baseline else ""),
            metadata={"model_roc_auc": evaluation.roc_auc, "baseline_roc_auc": evaluation.baseline["roc_auc"]},
        ),
        dg.AssetCheckResult(
            check_name=CHAMPION_CHECK, passed=verdict.beats_champion, severity=dg.AssetCheckSeverity.WARN,
            description=evaluation.champion_description()
                        + (not_promoted if evaluation.champion and not verdict.beats_champion else ""),
            metadata={"champion_version": evaluation.champion_version or "none", "verdict": verdict.outcome},
        ),
        dg.AssetCheckResult(check_name=BEHAVIOUR_CHECK, passed=verdict.behaves,
                            description=evaluation.behaviour_description()),
    ]


def _importance_table(groups, champion):
    """The groups as a table the UI renders, beside the champion's drop for the same group where it has one."""
    theirs = {g["group"]: g["auc_drop"] for g in ((champion.importance if champion else None) or {}).get("groups", [])}
    column = f"champion v{champion.version} drop" if champion else "champion drop"
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


@derived_code_version
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
                          description="Test ROC AUC better than the current champion's on the same test flights "
                                      "beyond the noise (the paired DeLong interval of the gain lies above the margin); "
                                      "failing (WARN) means not promoted, and the run still succeeds."),
        dg.AssetCheckSpec(BEHAVIOUR_CHECK, asset="delay_model", blocking=True,
                          description="Invariance to flight number, heavy rain does not lower delay, obvious cases."),
    ],
    retry_policy=IO_RETRY,
    io_manager_key="value_io_manager",
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
    fingerprint = verify_run_scoped_input(context, Table.TRAINING_SET, training_set)
    result = evaluate_and_register(context, config, training_set, registry, compute, trainer, fingerprint)
    yield dg.Output(result.candidate, metadata=result.metadata)
    yield from result.checks


@derived_code_version
@dg.asset(group_name="training", kinds={"mlflow"}, pool="champion_promotion",
          retry_policy=IO_RETRY, output_required=False)
def champion_model(context: dg.AssetExecutionContext, delay_model: Candidate, registry: MlflowRegistry):
    """The registered version behind the `champion` alias: what serving loads.

    Promotes the candidate `delay_model` registered in this run (or its newest, when run alone) once its
    checks passed, by compare-and-swap:
    only if the champion is still the one the candidate was compared with, so two trainings cannot
    both win. The version records previous_version, promoted_by and the reason as tags.

    A well-behaved candidate that is not better than the champion, or below the baseline while a champion
    serves (verdict ``keep_champion``), is a completed evaluation: nothing is materialized (so no Bento is
    built downstream), an observation records "not promoted" and why, and the run succeeds. A misbehaving
    candidate, or one below the baseline with no champion, fails the run.
    The outcome is tagged on the run (``assets/run_tags.py``) for the retraining sensor.
    """
    from ml.promotion import KEEP_CHAMPION

    candidate = delay_model
    if not candidate.passed:
        if candidate.outcome != KEEP_CHAMPION:
            raise dg.Failure(f"champion_model: v{candidate.version} did not pass its checks: {candidate.reason or None}",
                             allow_retries=False)
        _record_not_promoted(context, candidate, registry.champion_version())
        return
    reason = (
        f"test ROC AUC {_auc(candidate.test_roc_auc)} vs baseline {_auc(candidate.baseline_roc_auc)}"
        f" and champion v{candidate.evaluated_against or 'none'} {_auc(candidate.champion_roc_auc)}"
        + (f", gain {_gain(candidate.champion_gain)}" if candidate.champion_gain else "")
    )
    previous = registry.promote(candidate, candidate.evaluated_against, promoted_by=f"dagster run {context.run_id}",
                                reason=reason)
    _tag_outcome(context, TrainingOutcome.PROMOTED, candidate)
    yield dg.MaterializeResult(
        metadata={
            "champion_version": candidate.version,
            "mlflow_run": candidate.run_link,
            "previous_version": previous or "none",
            "model_uri": registry.champion_uri(),
            "reason": reason,
            "champion_gain": dg.MetadataValue.json(candidate.champion_gain or {}),
        }
    )


def _record_not_promoted(context: dg.AssetExecutionContext, candidate: Candidate, champion: str | None) -> None:
    context.log.info(f"champion_model: v{candidate.version} not promoted ({candidate.reason}); champion v{champion} stays")
    context.log_event(dg.AssetObservation(asset_key=context.asset_key, metadata={
        "promoted": False,
        "candidate_version": candidate.version,
        "champion_version": champion or "none",
        "reason": candidate.reason,
        "champion_gain": dg.MetadataValue.json(candidate.champion_gain or {}),
        "mlflow_run": candidate.run_link,
    }))
    _tag_outcome(context, TrainingOutcome.NOT_PROMOTED, candidate)


def _tag_outcome(context: dg.AssetExecutionContext, outcome: TrainingOutcome, candidate: Candidate) -> None:
    context.instance.add_run_tags(context.run_id, TrainingRunTags(outcome, candidate.window_last_day).format())


def _gain(gain: dict) -> str:
    return f"{gain['estimate']:+.4f} [{gain['low']:+.4f}, {gain['high']:+.4f}] ({gain['level']:.0%} CI, {gain['flights']:,} flights)"


def _auc(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
