"""Monitoring: what the service saw vs what the champion learned from (drift), and how it did (delayed labels)."""

import dagster as dg

from ml.tables import Table

from assets.features import flight_features
from assets.partitions import daily_partitions
from assets.policies import IO_RETRY
from assets.versions import code_version
from assets.inference import batch_predictions
from assets.training import champion_model
from ml.gates import (
    DRIFT_COLUMN_THRESHOLD, DRIFT_COLUMNS, DRIFT_MIN_ROWS, DRIFT_SHARE_THRESHOLD, PERFORMANCE_AUC_MARGIN,
    PERFORMANCE_MIN_LABELLED,
)
from resources.mlflow_registry import MlflowRegistry
from resources.bento_store import BentoStore
from resources.storage import LakeArea, LakeStorage

DRIFT_CHECK = "drift_check"
PERFORMANCE_CHECK = "performance_check"


class DriftConfig(dg.Config):
    gate_columns: list[str] = list(DRIFT_COLUMNS)
    """Columns the drift check gates on (the report covers every feature)."""
    column_threshold: float = DRIFT_COLUMN_THRESHOLD
    """A gate column drifts at a normed Wasserstein distance at or above this (reference standard deviations)."""
    drift_share_threshold: float = DRIFT_SHARE_THRESHOLD
    """The check fails on a day whose share of drifted gate columns is at or above this (docs/monitoring.md)."""
    min_rows: int = DRIFT_MIN_ROWS
    """Days with fewer current rows are reported but never fail the check (too few to tell)."""


class PerformanceConfig(dg.Config):
    auc_margin: float = PERFORMANCE_AUC_MARGIN
    """The check fails on a day whose realised ROC AUC is this far below the serving model's test AUC."""
    min_labelled: int = PERFORMANCE_MIN_LABELLED
    """Days with fewer labelled flights are reported but never fail the check."""


def _served_or(bentos: BentoStore, storage: LakeStorage, day: str, fallback: str):
    """The day's served requests (the prediction log), else the day's ``fallback`` partition; with the source."""
    from resources.parquet_io import Warehouse
    from serving.prediction_log import read_prediction_log

    served = read_prediction_log(bentos.prediction_log_url, [day])
    if len(served):
        return served, "served traffic"
    stored = Warehouse(storage).frame(fallback, day)
    return (stored, fallback.replace("_", " ")) if stored is not None and len(stored) else (None, "none")


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="monitoring",
    kinds={"scipy", "html", "parquet"},
    deps=[flight_features, champion_model],
    check_specs=[
        dg.AssetCheckSpec(DRIFT_CHECK, asset="drift_report",
                          description=f"Temperature and dew point within {DRIFT_COLUMN_THRESHOLD} reference SDs (normed Wasserstein) on every day of the run."),
    ],
    code_version=code_version("ml.drift", "ml.drift_html"),
    retry_policy=IO_RETRY,
)
def drift_report(context: dg.AssetExecutionContext, config: DriftConfig, registry: MlflowRegistry,
                 storage: LakeStorage, bentos: BentoStore):
    """Data drift of each day against the champion's reference sample: Evidently's tests, run with scipy.

    Current: the day's served requests from the prediction log, or the day's feature partition when
    no traffic was served. Reference: the stratified training sample logged with the champion in
    MLflow. Per column the test Evidently's DataDriftPreset would pick (ml/drift.py, cross-checked
    against Evidently in the tests) at a fraction of its cost. The HTML report (per column: test,
    score, verdict, both distributions) goes to `monitoring/drift/date=<day>/report.html` in the lake; drift
    share and per-column scores are metadata of each partition, and the stored Parquet (one row per column).
    """
    import tempfile

    import pandas as pd

    from ml.drift import drift_report as day_drift
    from ml.drift import gate

    version = registry.champion_version()
    if version is None:
        raise dg.Failure("drift_report: no champion yet; its training sample is the reference", allow_retries=False)
    with tempfile.TemporaryDirectory(prefix="reference-") as tmp:
        reference = pd.read_parquet(registry.download_reference(version, tmp))

    out, drifted_days, worst = {}, {}, 0.0
    for day in context.partition_keys:
        current, source = _served_or(bentos, storage, day, "flight_features")
        if current is None:
            context.log.warning(f"drift_report {day}: no traffic and no features; nothing to compare")
            out[day] = None
            continue
        result = day_drift(current, reference)
        verdict = gate(result, config.gate_columns, config.column_threshold)
        key = LakeStorage.area_key(LakeArea.DRIFT_REPORTS, f"date={day}", "report.html")
        storage.write_bytes(key, result.html.encode())
        counted = verdict.share is not None and result.rows_current >= config.min_rows
        if counted and verdict.share >= config.drift_share_threshold:
            drifted_days[day] = round(verdict.share, 4)
        if counted:
            worst = max(worst, verdict.share)
        context.add_asset_metadata(
            {
                "drift_share": round(verdict.share, 4) if verdict.share is not None else "not evaluated",
                "drifted_gate_columns": dg.MetadataValue.json(verdict.drifted),
                "evidently_drift_share": round(result.drift_share, 4),
                "evidently_drifted_columns": dg.MetadataValue.json(result.drifted_columns),
                "skipped_columns": dg.MetadataValue.json(result.skipped_columns),
                "current_source": source,
                "rows_current": result.rows_current,
                "reference_version": version,
                "report": dg.MetadataValue.url(storage.uri(key)) if storage.is_s3 else dg.MetadataValue.path(storage.uri(key)),
                **{f"score_{k}": round(v, 4) for k, v in result.column_scores.items()},
            },
            partition_key=day,
        )
        out[day] = pd.DataFrame(
            {
                "date": day,
                "column": list(result.column_scores),
                "score": list(result.column_scores.values()),
                "test": [result.column_tests[c] for c in result.column_scores],
                "drifted": [c in result.drifted_columns for c in result.column_scores],
                "gate_column": [c in verdict.scores for c in result.column_scores],
                "gate_drift_share": verdict.share,
                "source": source,
                "reference_version": version,
            }
        )
    yield dg.Output(out)
    yield dg.AssetCheckResult(
        check_name=DRIFT_CHECK,
        passed=not drifted_days,
        description=(
            f"drifted days (share of {config.gate_columns} >= {config.drift_share_threshold}): {drifted_days}"
            if drifted_days
            else f"no day at drift share {config.drift_share_threshold} of {config.gate_columns} (worst {worst:.3f})"
        ),
        metadata={
            "drifted_days": dg.MetadataValue.json(drifted_days),
            "last_day": context.partition_keys[-1],
            "worst_drift_share": round(worst, 4),
            "threshold": config.drift_share_threshold,
            "champion_version": version,
        },
    )


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="monitoring",
    kinds={"scikit-learn", "parquet"},
    deps=[flight_features, batch_predictions],
    check_specs=[
        dg.AssetCheckSpec(PERFORMANCE_CHECK, asset="model_performance",
                          description="Realised ROC AUC of the serving model within a margin of its test AUC."),
    ],
    code_version=code_version("ml.performance"),
    retry_policy=IO_RETRY,
)
def model_performance(context: dg.AssetExecutionContext, config: PerformanceConfig, registry: MlflowRegistry,
                      storage: LakeStorage, bentos: BentoStore):
    """How the served model did once the day's outcomes landed: ROC AUC, log loss, Brier, calibration.

    The day's predictions (served traffic from the prediction log, else batch predictions) joined
    with its flight_features labels (arrived 15+ min late) by date, carrier, flight and origin.
    Cancelled and diverted flights have no label and are counted, not scored.
    """
    import pandas as pd

    from ml.performance import served_performance
    from resources.parquet_io import Warehouse
    from serving.prediction_log import SCORE

    out, failing, test_aucs = {}, {}, {}
    for day in context.partition_keys:
        predictions, source = _served_or(bentos, storage, day, "batch_predictions")
        outcomes = Warehouse(storage).frame(Table.FLIGHT_FEATURES, day)
        if predictions is None or outcomes is None:
            context.log.warning(f"model_performance {day}: predictions from {source}, outcomes "
                                f"{'missing' if outcomes is None else 'present'}; skipped")
            out[day] = None
            continue
        result = served_performance(predictions.rename(columns={SCORE: "score"}), outcomes)
        version = max(result.model_versions, key=result.model_versions.get) if result.model_versions else None
        if version is not None and version not in test_aucs:
            test_aucs[version] = registry.candidate(version).test_roc_auc
        expected = test_aucs.get(version)
        labelled = result.rows_joined  # matched, labelled, with a valid score
        if (result.roc_auc is not None and expected is not None and labelled >= config.min_labelled
                and result.roc_auc < expected - config.auc_margin):
            failing[day] = {"roc_auc": round(result.roc_auc, 4), "test_roc_auc": expected, "model_version": version}
        metrics = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.metrics().items()}
        context.add_asset_metadata(
            {**{k: v for k, v in metrics.items() if v is not None}, "source": source,
             "model_version": version or "none", "model_test_roc_auc": expected if expected is not None else "n/a",
             "calibration": dg.MetadataValue.md(result.calibration.round(4).to_markdown(index=False))},
            partition_key=day,
        )
        out[day] = pd.DataFrame([{**metrics, "date": day, "source": source, "model_version": version}])
    yield dg.Output(out)
    yield dg.AssetCheckResult(
        check_name=PERFORMANCE_CHECK,
        passed=not failing,
        description=(f"ROC AUC more than {config.auc_margin} below test: {failing}" if failing
                     else f"every scored day within {config.auc_margin} of the model's test ROC AUC"),
        metadata={"failing_days": dg.MetadataValue.json(failing), "last_day": context.partition_keys[-1],
                  "margin": config.auc_margin},
    )
