"""Serving: the champion as a Bento (checked against the registry over HTTP), and batch scoring of feature days."""

import dagster as dg

from assets.features import flight_features
from assets.partitions import daily_partitions, on_new_upstream_partition
from assets.policies import IO_RETRY
from assets.training import champion_model
from resources.mlflow_registry import MlflowRegistry
from resources.serving import BentoServing
from resources.storage import LakeStorage

PARITY_CHECK = "serves_registry_predictions"


class BentoConfig(dg.Config):
    parity_rows: int = 500
    """Rows of the champion's test days sent to the served Bento and to the registry model."""
    parity_tolerance: float = 1e-6
    """Largest allowed |HTTP − registry| difference in probability."""


def _champion(mlflow: MlflowRegistry) -> tuple[str, str]:
    version = mlflow.champion_version()
    if version is None:
        raise dg.Failure("no champion in the registry yet: materialize champion_model first", allow_retries=False)
    return version, mlflow.client().get_model_version(mlflow.model_name, version).run_id


def _post_all(url: str, records: list[dict], chunk: int = 250) -> list[float]:
    import httpx

    scores: list[float] = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for start in range(0, len(records), chunk):
            response = client.post("/predict", json={"flights": records[start : start + chunk]})
            response.raise_for_status()
            scores += [p["delay_probability"] for p in response.json()]
    return scores


@dg.asset(
    group_name="serving",
    kinds={"bentoml"},
    deps=[champion_model],
    check_specs=[
        dg.AssetCheckSpec(PARITY_CHECK, asset="bento", blocking=True,
                          description="The built Bento, served over HTTP, predicts what the registry's model predicts."),
    ],
    output_required=False,
    code_version="1",
    retry_policy=IO_RETRY,
)
def bento(context: dg.AssetExecutionContext, config: BentoConfig, mlflow: MlflowRegistry,
          serving: BentoServing, storage: LakeStorage):
    """The champion packaged as a BentoML service (`serving/service.py`), ready to serve or containerize.

    The champion's unit goes into BentoML's model store and a Bento is built around it
    (`deploy/bentofile.yaml`). The parity check serves that Bento with `bentoml serve` on 127.0.0.1
    and compares its HTTP predictions on real test-day flights with the registry model's
    (`mlflow.pyfunc`). A Bento that fails is deleted, so `latest` is always one that passed.
    """
    import tempfile
    from pathlib import Path

    import mlflow as mlflow_lib
    import numpy as np

    from ml.features import FEATURE_COLUMNS
    from resources.parquet_io import read_warehouse_frame
    from serving.schema import records_from_features

    version, run_id = _champion(mlflow)
    model_uri = mlflow.model_uri(version)
    with tempfile.TemporaryDirectory(prefix="bento-") as tmp:
        unit = mlflow.download_unit(version, tmp)
        built = serving.build(unit, version, run_id, model_uri)
        context.log.info(f"built {built['bento_tag']} with model {built['model_tag']} (registry v{version})")

        try:
            window = read_warehouse_frame(storage, "training_set")
            if window is None:
                raise dg.Failure("bento: no training_set to draw parity rows from; materialize training_set first", allow_retries=False)
            test_rows = window[window["split"] == "test"] if "split" in window else window
            sample = test_rows.sample(n=min(config.parity_rows, len(test_rows)), random_state=0)
            mlflow.client()  # sets MLflow's tracking and registry URIs for pyfunc.load_model
            model = mlflow_lib.pyfunc.load_model(model_uri)
            expected = np.asarray(model.predict(sample[list(FEATURE_COLUMNS)]), dtype="float64")
            log = Path(tmp) / "serve.log"
            with serving.serve(built["bento_tag"], log, prediction_log_url=str(Path(tmp) / "plog")) as url:
                served = np.asarray(_post_all(url, records_from_features(sample)), dtype="float64")
        except BaseException:
            # Never leave an unchecked Bento as `latest`, whatever stopped the check.
            serving.delete(built["bento_tag"])
            raise

    worst = float(np.max(np.abs(served - expected))) if len(sample) else 0.0
    passed = len(sample) > 0 and worst <= config.parity_tolerance
    check = dg.AssetCheckResult(
        check_name=PARITY_CHECK,
        passed=passed,
        description=f"{len(sample)} rows over HTTP vs mlflow.pyfunc {model_uri}: max |diff| {worst:.2e}",
        metadata={"rows": len(sample), "max_abs_diff": worst, "tolerance": config.parity_tolerance},
    )
    if passed:
        yield dg.MaterializeResult(
            metadata={
                "bento_tag": built["bento_tag"],
                "bentoml_model": built["model_tag"],
                "model_version": version,
                "model_uri": model_uri,
                "size_bytes": built["size_bytes"],
                "bento_path": dg.MetadataValue.path(built["path"]),
                "serve": dg.MetadataValue.text(f"BENTOML_HOME={serving.bentoml_home} bentoml serve {built['bento_tag']}"),
            }
        )
    else:
        serving.delete(built["bento_tag"])
        context.log.error(f"bento {built['bento_tag']} failed parity and was deleted: {check.description}")
    yield check


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="serving",
    kinds={"pytorch", "parquet"},
    deps=[flight_features, champion_model],
    code_version="1",
    automation_condition=on_new_upstream_partition(ignore=["champion_model"]),
    retry_policy=IO_RETRY,
)
def batch_predictions(context: dg.AssetExecutionContext, mlflow: MlflowRegistry, storage: LakeStorage):
    """The champion's delay probability for every flight of the day, scored in batch (no HTTP).

    The same unit and preprocessing as the service (`ml.model.ModelUnit`), vectorised over the day;
    each row keeps the flight's keys and the model version. Days without features are skipped.
    """
    import tempfile

    import pandas as pd

    from ml.features import KEY_COLUMNS
    from ml.model import ModelUnit
    from resources.parquet_io import read_warehouse_frame
    from serving.prediction_log import SCORE

    version, _ = _champion(mlflow)
    with tempfile.TemporaryDirectory(prefix="unit-") as tmp:
        unit = ModelUnit.load(mlflow.download_unit(version, tmp))
    scored_at = pd.Timestamp.now(tz="UTC")
    out, rows = {}, 0
    for day in context.partition_keys:
        features = read_warehouse_frame(storage, "flight_features", day)
        if features is None:
            context.log.warning(f"batch_predictions {day}: no flight_features partition; skipped")
            out[day] = None
            continue
        scored = features[[*KEY_COLUMNS, "dest"]].copy()
        scored[SCORE] = unit.predict_proba(features).astype("float64")
        scored["model_version"] = version
        scored["scored_at"] = scored_at
        out[day] = scored
        rows += len(scored)
    return dg.Output(
        out,
        metadata={"dagster/row_count": rows, "model_version": version,
                  "days_without_features": dg.MetadataValue.json(sorted(d for d, f in out.items() if f is None))},
    )
