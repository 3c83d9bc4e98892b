"""What `delay_model` does, step by step: train, compare, log to MLflow, register, judge.

Kept out of assets/training.py so the asset reads as a description; every function here only
wires `ml/` (training, evaluation) to MLflow and Dagster's check results.
"""

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from resources import settings
from resources.mlflow_registry import REFERENCE_ARTIFACT_DIR, REFERENCE_FILE, UNIT_DIGEST_TAG

BASELINE_CHECK = "reaches_baseline"
CHAMPION_CHECK = "not_worse_than_champion"
BEHAVIOUR_CHECK = "behavioural_tests"
PYFUNC_FILE = Path(__file__).resolve().parents[1] / "resources" / "delay_pyfunc.py"
ML_PACKAGE = Path(__file__).resolve().parents[1] / "ml"


@dataclass
class RegisteredCandidate:
    metadata: dict
    checks: list = field(default_factory=list)


def _champion_scores(mlflow, version: str | None, test):
    """The current champion's scores on the candidate's test set (same rows, same labels).

    The champion's unit is verified against the digest recorded at its registration: a tampered or
    pickled champion fails the run (UnitIntegrityError) instead of judging the candidate.
    """
    if version is None:
        return None
    from ml.model import UnitIntegrityError
    from ml.redaction import redact

    try:
        unit = mlflow.load_unit(version)
    except UnitIntegrityError as exc:
        raise dg.Failure(
            description=redact(f"delay_model: the champion v{version} is refused, so no candidate can be judged "
                               f"against it: {exc}; restore or retrain it, or move the champion alias"),
            allow_retries=False,
        ) from None
    return unit.predict_proba(test)


def register_unit(mlflow, unit, example) -> str:
    """Log ``unit`` as the pyfunc model of the active MLflow run, register it, record its digest; the version.

    The digest is taken from the saved files before they are logged, so whatever changes them later
    (in the artifact store, in transit) is refused wherever the version is loaded.
    """
    import mlflow as mlflow_lib
    from mlflow.models import infer_signature

    from ml.model import unit_digest

    with tempfile.TemporaryDirectory() as tmp:
        unit_dir = unit.save(Path(tmp) / "unit")
        digest = unit_digest(unit_dir)
        info = mlflow_lib.pyfunc.log_model(
            name="model",
            python_model=str(PYFUNC_FILE),
            artifacts={"unit": str(unit_dir)},
            code_paths=[str(ML_PACKAGE)],
            model_config={UNIT_DIGEST_TAG: digest},
            signature=infer_signature(example, unit.predict_proba(example)),
            pip_requirements=["torch", "pandas<3", "numpy", "scikit-learn"],
            registered_model_name=mlflow.model_name,
        )
    version = str(info.registered_model_version)
    mlflow.client().set_model_version_tag(mlflow.model_name, version, UNIT_DIGEST_TAG, digest)
    return version


def _log_training(client, run_id, config, train_result, spec_metadata) -> None:
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    metrics = []
    for stats in train_result.history:
        for name in ("train_loss", "val_loss", "val_roc_auc", "samples_per_s"):
            metrics.append(Metric(f"epoch_{name}", float(getattr(stats, name)), now, stats.epoch))
    params = {
        **{k: v for k, v in config.model_dump().items()},
        "hidden": str(train_result.unit.config.hidden),
        "dropout": train_result.unit.config.dropout,
        "device": train_result.device,
        "best_epoch": train_result.best_epoch,
        **spec_metadata,
    }
    client.log_batch(run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()])


def evaluate_and_register(context, config, training_set, mlflow, compute) -> RegisteredCandidate:
    import mlflow as mlflow_lib

    from ml.dataset import SPLIT, TEST, TRAIN, VALIDATION
    from ml.drift import reference_sample
    from ml.evaluate import Baseline, behavioural_suite, classification_metrics, labels
    from ml.features import FEATURE_COLUMNS
    from ml.train import TrainConfig, train_model

    parts = {name: training_set[training_set[SPLIT] == name] for name in (TRAIN, VALIDATION, TEST)}
    for name, part in parts.items():
        if part.empty:
            raise dg.Failure(f"delay_model: the {name} split of training_set is empty", allow_retries=False)
    device = compute.torch_device()
    train_config = TrainConfig(
        epochs=config.epochs, batch_size=config.batch_size, learning_rate=config.learning_rate,
        patience=config.patience, seed=config.seed,
    )
    started = time.perf_counter()
    trained = train_model(parts[TRAIN], parts[VALIDATION], train_config, device=device)
    train_seconds = time.perf_counter() - started
    test, y_test = parts[TEST], labels(parts[TEST])
    model_metrics = classification_metrics(y_test, trained.unit.predict_proba(test))
    baseline = Baseline(seed=config.seed).fit(parts[TRAIN])
    baseline_metrics = classification_metrics(y_test, baseline.predict_proba(test))

    champion = mlflow.champion_version()
    champion_scores = _champion_scores(mlflow, champion, test)
    champion_metrics = classification_metrics(y_test, champion_scores) if champion_scores is not None else None
    sample = test.sample(min(config.behaviour_sample, len(test)), random_state=config.seed)
    behaviour = behavioural_suite(trained.unit.predict_proba, sample)

    beats_baseline = model_metrics["roc_auc"] >= baseline_metrics["roc_auc"] - config.baseline_tolerance
    beats_champion = champion_metrics is None or (
        model_metrics["roc_auc"] >= champion_metrics["roc_auc"] - config.champion_tolerance
    )
    behaves = all(b.passed for b in behaviour)
    reasons = [
        *([] if beats_baseline else [f"ROC AUC {model_metrics['roc_auc']:.4f} < baseline {baseline_metrics['roc_auc']:.4f} - {config.baseline_tolerance}"]),
        *([] if beats_champion else [f"ROC AUC {model_metrics['roc_auc']:.4f} < champion v{champion} {champion_metrics['roc_auc']:.4f}"]),
        *[f"{b.name}: {b.detail}" for b in behaviour if not b.passed],
    ]

    fingerprint = _upstream_fingerprint(context)
    experiment_id = mlflow.experiment_id()
    client = mlflow.client()
    with mlflow_lib.start_run(experiment_id=experiment_id, run_name=f"delay_model {context.run_id[:8]}") as run:
        run_id = run.info.run_id
        _log_training(client, run_id, config, trained, {"train_rows": len(parts[TRAIN])})
        mlflow_lib.log_metrics({f"test_{k}": v for k, v in model_metrics.items()})
        mlflow_lib.log_metrics({f"baseline_test_{k}": v for k, v in baseline_metrics.items()})
        if champion_metrics:
            mlflow_lib.log_metrics({f"champion_test_{k}": v for k, v in champion_metrics.items()})
        mlflow_lib.set_tags(
            {
                "data_fingerprint": fingerprint,
                "code_version": settings.code_version(),
                "dagster_run_id": context.run_id,
                "device": trained.device,
            }
        )
        trained.unit.info = {"data_fingerprint": fingerprint, "test_roc_auc": model_metrics["roc_auc"]}
        version = register_unit(mlflow, trained.unit, test[list(FEATURE_COLUMNS)].head(20))
        with tempfile.TemporaryDirectory() as tmp:
            reference = Path(tmp) / REFERENCE_FILE
            reference_sample(parts[TRAIN]).to_parquet(reference, index=False)
            mlflow_lib.log_artifact(str(reference), artifact_path=REFERENCE_ARTIFACT_DIR)
    passed = beats_baseline and beats_champion and behaves
    version_tags = {
        "candidate_status": "passed" if passed else "rejected",
        "rejection_reason": "; ".join(reasons) or "none",
        "evaluated_against_champion": champion or "none",
        "test_roc_auc": f"{model_metrics['roc_auc']:.4f}",
        "baseline_test_roc_auc": f"{baseline_metrics['roc_auc']:.4f}",
        "champion_test_roc_auc": f"{champion_metrics['roc_auc']:.4f}" if champion_metrics else "n/a",
        "data_fingerprint": fingerprint,
        "dagster_run_id": context.run_id,
    }
    for key, value in version_tags.items():
        client.set_model_version_tag(mlflow.model_name, version, key, value)

    samples_per_s = max((h.samples_per_s for h in trained.history), default=0.0)
    metadata = {
        "model_version": version,
        "model_uri": mlflow.model_uri(version),
        "mlflow_run": dg.MetadataValue.url(mlflow.run_link(run_id)) if mlflow.tracking_uri.startswith("http") else mlflow.run_link(run_id),
        "unit_sha256": mlflow.registered_digest(version),
        "mlflow_run_id": run_id,
        "evaluated_against_champion": champion or "none",
        "test_roc_auc": round(model_metrics["roc_auc"], 4),
        "test_pr_auc": round(model_metrics["pr_auc"], 4),
        "test_log_loss": round(model_metrics["log_loss"], 4),
        "baseline_test_roc_auc": round(baseline_metrics["roc_auc"], 4),
        "champion_test_roc_auc": round(champion_metrics["roc_auc"], 4) if champion_metrics else "n/a",
        "best_epoch": trained.best_epoch,
        "epochs_run": len(trained.history),
        "train_seconds": round(train_seconds, 1),
        "train_samples_per_s": round(samples_per_s),
        "device": trained.device,
        "data_fingerprint": fingerprint,
    }
    checks = [
        dg.AssetCheckResult(
            check_name=BASELINE_CHECK, passed=beats_baseline,
            description=f"model {model_metrics['roc_auc']:.4f} vs baseline {baseline_metrics['roc_auc']:.4f} (tolerance {config.baseline_tolerance})",
            metadata={"model_roc_auc": model_metrics["roc_auc"], "baseline_roc_auc": baseline_metrics["roc_auc"]},
        ),
        dg.AssetCheckResult(
            check_name=CHAMPION_CHECK, passed=beats_champion,
            description=(
                f"model {model_metrics['roc_auc']:.4f} vs champion v{champion} {champion_metrics['roc_auc']:.4f}"
                if champion_metrics else "no champion yet"
            ),
            metadata={"champion_version": champion or "none"},
        ),
        dg.AssetCheckResult(
            check_name=BEHAVIOUR_CHECK, passed=behaves,
            description="; ".join(f"{b.name}: {'ok' if b.passed else 'FAILED'} ({b.detail})" for b in behaviour),
        ),
    ]
    return RegisteredCandidate(metadata=metadata, checks=checks)


def _upstream_fingerprint(context) -> str:
    from assets.training import materialization_metadata

    metadata = materialization_metadata(context, "training_set") or {}
    value = metadata.get("data_fingerprint")
    return str(value.value) if value is not None else "unknown"
