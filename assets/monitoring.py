"""Monitoring: what the service saw vs what the champion learned from (drift), and how it did (delayed labels)."""

from typing import Literal

import dagster as dg

from ml.tables import Table

from assets.features import flight_features
from assets.partitions import daily_partitions
from assets.policies import IO_RETRY
from assets.versions import derived_code_version
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
    engine: Literal["evidently", "fast"] = "evidently"
    """"evidently": Evidently's own report (HTML + JSON) per day. "fast": the same tests with scipy, a JSON of
    figures only, for backfills of many days where Evidently's ~1.5 s a day adds up (ml/drift_day.py)."""

    def spec(self):
        """The gate as the framework-free code takes it."""
        from ml.drift import GateSpec

        return GateSpec(tuple(self.gate_columns), self.column_threshold, self.drift_share_threshold, self.min_rows)


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


def _champion_reference(registry: MlflowRegistry):
    """The champion's version and the training sample logged with it (the drift reference)."""
    import tempfile

    import pandas as pd

    version = registry.champion_version()
    if version is None:
        raise dg.Failure("drift_report: no champion yet; its training sample is the reference", allow_retries=False)
    with tempfile.TemporaryDirectory(prefix="reference-") as tmp:
        return version, pd.read_parquet(registry.download_reference(version, tmp))


def _store_report(storage: LakeStorage, day: str, files: dict[str, bytes]) -> dict[str, str]:
    """Write the day's report files to the lake's drift reports area; their keys by file name."""
    keys = {}
    for name, content in files.items():
        keys[name] = LakeStorage.area_key(LakeArea.DRIFT_REPORTS, f"date={day}", name)
        storage.write_bytes(keys[name], content)
    return keys


def _link(storage: LakeStorage, key: str):
    uri = storage.uri(key)
    return dg.MetadataValue.url(uri) if storage.is_s3 else dg.MetadataValue.path(uri)


@derived_code_version
@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="monitoring",
    kinds={"evidently", "html", "parquet"},
    deps=[flight_features, champion_model],
    check_specs=[
        dg.AssetCheckSpec(DRIFT_CHECK, asset="drift_report",
                          description=f"Temperature and dew point within {DRIFT_COLUMN_THRESHOLD} reference SDs (normed Wasserstein) on every day of the run."),
    ],
    retry_policy=IO_RETRY,
)
def drift_report(context: dg.AssetExecutionContext, config: DriftConfig, registry: MlflowRegistry,
                 storage: LakeStorage, bentos: BentoStore):
    """Data drift of each day against the champion's reference sample: Evidently's report, and the drift gate.

    Current: the day's served requests from the prediction log, or the day's feature partition when
    no traffic was served. Reference: the stratified training sample logged with the champion in
    MLflow. Evidently's DataDriftPreset over every feature, with the gate (share of temp and dew point
    at or beyond the normed Wasserstein threshold) as Evidently metrics in the same report; its HTML
    and JSON go to `monitoring/drift/date=<day>/` in the lake, linked from each partition's
    metadata, which carries the gate's share and per-column scores read from that JSON. The stored
    Parquet has one row per column. `engine: fast` (config) runs the same tests with scipy for large
    backfills and stores a JSON of its figures instead.
    """
    from ml.drift_day import REPORT_JSON, day_drift, day_metadata, day_table, drift_check

    version, reference = _champion_reference(registry)
    spec = config.spec()
    out, days = {}, {}
    for day in context.partition_keys:
        current, source = _served_or(bentos, storage, day, "flight_features")
        if current is None:
            context.log.warning(f"drift_report {day}: no traffic and no features; nothing to compare")
            out[day] = None
            continue
        days[day] = drift = day_drift(current, reference, spec, config.engine)
        keys = _store_report(storage, day, drift.files)
        context.add_asset_metadata(
            {**day_metadata(drift), "current_source": source, "reference_version": version,
             "report": _link(storage, keys[drift.report_name()]), "report_json": _link(storage, keys[REPORT_JSON])},
            partition_key=day,
        )
        out[day] = day_table(drift, day, source, version)
    yield dg.Output(out)
    check = drift_check(days, spec)
    yield dg.AssetCheckResult(
        check_name=DRIFT_CHECK,
        passed=check.passed,
        description=check.description,
        metadata={"drifted_days": dg.MetadataValue.json(check.drifted_days), "last_day": context.partition_keys[-1],
                  "worst_drift_share": round(check.worst, 4), "threshold": config.drift_share_threshold,
                  "champion_version": version},
    )


@derived_code_version
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
    yield _performance_check(failing, config.auc_margin, context.partition_keys[-1])


def _performance_check(failing: dict, margin: float, last_day: str) -> dg.AssetCheckResult:
    """The performance check over a run's days: it fails when any scored day fell more than ``margin`` below."""
    return dg.AssetCheckResult(
        check_name=PERFORMANCE_CHECK,
        passed=not failing,
        description=(f"ROC AUC more than {margin} below test: {failing}" if failing
                     else f"every scored day within {margin} of the model's test ROC AUC"),
        metadata={"failing_days": dg.MetadataValue.json(failing), "last_day": last_day, "margin": margin},
    )
