"""Monitoring: what the service saw vs what the champion learned from (drift), and how it did (delayed labels)."""

from typing import Literal

import dagster as dg

from assets.features import flight_features
from assets.partitions import daily_partitions
from assets.policies import IO_RETRY
from assets.versions import derived_code_version
from assets.inference import batch_predictions
from assets.training import champion_model
from ml.gates import (
    DRIFT_COLUMN_THRESHOLD, DRIFT_COLUMNS, DRIFT_MIN_ROWS, DRIFT_SHARE_THRESHOLD, PERFORMANCE_AUC_TOLERANCE,
    PERFORMANCE_CONFIDENCE, PERFORMANCE_MIN_LABELLED, PERFORMANCE_WINDOW_DAYS,
)
from ml.tables import Table
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
    window_days: int = PERFORMANCE_WINDOW_DAYS
    """The check judges the flights of the day and the days before it, this many in all, the serving model scored."""
    confidence: float = PERFORMANCE_CONFIDENCE
    """Level of the DeLong interval of the window's realised ROC AUC."""
    auc_tolerance: float = PERFORMANCE_AUC_TOLERANCE
    """The check fails when the interval's upper bound is more than this below the model's test ROC AUC."""
    min_labelled: int = PERFORMANCE_MIN_LABELLED
    """Windows with fewer labelled flights are reported but never fail the check; so are windows in which the
    serving model scored fewer than `window_days` days (the tolerance was calibrated on full windows)."""


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
                          description="Realised ROC AUC of the serving model over a window of days, with its "
                                      "confidence interval, not below its test AUC by more than the tolerance."),
    ],
    retry_policy=IO_RETRY,
)
def model_performance(context: dg.AssetExecutionContext, config: PerformanceConfig, registry: MlflowRegistry,
                      storage: LakeStorage, bentos: BentoStore):
    """How the served model did once the day's outcomes landed: ROC AUC, log loss, Brier, calibration.

    The day's predictions (served traffic from the prediction log, else batch predictions) joined
    with its flight_features labels (arrived 15+ min late) by date, carrier, flight and origin.
    Cancelled and diverted flights have no label and are counted, not scored. The check judges a window:
    the flights the day's serving model scored over the last `window_days` days, pooled, with a DeLong
    interval of their ROC AUC (`ml.performance.windowed_performance`); one noisy day cannot fail it.
    """
    import pandas as pd

    days = _DayPerformance(storage, bentos)
    out, failing, expected_by_version = {}, {}, {}
    for day in context.partition_keys:
        result, source = days.of(day)
        if result is None:
            context.log.warning(f"model_performance {day}: predictions from {source} or outcomes missing; skipped")
            out[day] = None
            continue
        version = max(result.model_versions, key=result.model_versions.get) if result.model_versions else None
        if version is not None and version not in expected_by_version:
            expected_by_version[version] = registry.candidate(version).test_roc_auc
        evidence = days.window(day, version, expected_by_version.get(version), config)
        if evidence.fails:
            failing[day] = evidence.as_record()
        metrics = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.metrics().items()}
        context.add_asset_metadata(_performance_metadata(metrics, source, version, evidence, result), partition_key=day)
        out[day] = pd.DataFrame([{**metrics, "date": day, "source": source, "model_version": version}])
    yield dg.Output(out)
    yield _performance_check(failing, config, context.partition_keys[-1])


class _DayPerformance:
    """Each day's served performance, computed once per run, and the windows of days the check pools."""

    def __init__(self, storage: LakeStorage, bentos: BentoStore):
        self._storage, self._bentos, self._days = storage, bentos, {}

    def of(self, day: str):
        if day not in self._days:
            self._days[day] = self._compute(day)
        return self._days[day]

    def _compute(self, day: str):
        from ml.performance import served_performance
        from resources.parquet_io import Warehouse
        from serving.prediction_log import SCORE

        predictions, source = _served_or(self._bentos, self._storage, day, "batch_predictions")
        outcomes = Warehouse(self._storage).frame(Table.FLIGHT_FEATURES, day)
        if predictions is None or outcomes is None:
            return None, source
        return served_performance(predictions.rename(columns={SCORE: "score"}), outcomes), source

    def window(self, day: str, version: str | None, expected: float | None, config: PerformanceConfig):
        import datetime as dt

        from ml.performance import windowed_performance

        last = dt.date.fromisoformat(day)
        window = [(last - dt.timedelta(days=back)).isoformat() for back in range(config.window_days)]
        scored = {d: r.scored for d in window if daily_partitions.has_partition_key(d) and (r := self.of(d)[0]) is not None}
        return windowed_performance(scored, version, expected, tolerance=config.auc_tolerance, level=config.confidence,
                                    min_labelled=config.min_labelled, min_days=config.window_days)


def _performance_metadata(metrics: dict, source: str, version: str | None, evidence, result) -> dict:
    interval = evidence.interval
    return {
        **{k: v for k, v in metrics.items() if v is not None}, "source": source, "model_version": version or "none",
        "model_test_roc_auc": evidence.expected if evidence.expected is not None else "n/a",
        "window_days": dg.MetadataValue.json(list(evidence.days)),
        **({"window_roc_auc": round(interval.estimate, 4), "window_roc_auc_low": round(interval.low, 4),
            "window_roc_auc_high": round(interval.high, 4), "window_flights": interval.flights} if interval else {}),
        "window_verdict": evidence.reason,
        "calibration": dg.MetadataValue.md(result.calibration.round(4).to_markdown(index=False)),
    }


def _performance_check(failing: dict, config: PerformanceConfig, last_day: str) -> dg.AssetCheckResult:
    """The performance check over a run's days: it fails when a day's window shows the model worse than promised."""
    return dg.AssetCheckResult(
        check_name=PERFORMANCE_CHECK,
        passed=not failing,
        description=("; ".join(f"{day}: {e['reason']}" for day, e in failing.items()) if failing
                     else f"every judged window within {config.auc_tolerance} of the model's test ROC AUC "
                          f"({config.window_days} days, {config.confidence:.0%} DeLong interval)"),
        metadata={"failing_days": dg.MetadataValue.json(failing), "last_day": last_day,
                  "tolerance": config.auc_tolerance, "window_days": config.window_days, "confidence": config.confidence},
    )
