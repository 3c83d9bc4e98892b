"""champion → bento (built, served, parity-checked over HTTP) and batch_predictions, materialized by Dagster."""

import dagster as dg
import numpy as np
import pytest

from assets.features import flight_features
from assets.inference import PARITY_CHECK, batch_predictions, bento
from assets.training import champion_model, delay_model, training_set
from pipelines.partition_ranges import range_tags
from resources.parquet_io import Warehouse
from resources.bento_store import BentoStore
from serving.schema import records_from_features
from tests.conftest import chain_resources

pytestmark = pytest.mark.slow
FAST_TRAINING = {"ops": {"delay_model": {"config": {"epochs": 4, "patience": 2}}}}
DAY = "2013-01-28"


def _resources(lake, registry, tmp_path) -> dict:
    return {
        **chain_resources(lake, registry),
        "bentos": BentoStore(bentoml_home=str(tmp_path / "bentoml"), prediction_log_url=str(tmp_path / "predictions")),
    }


def _materialize(assets, selection, resources, instance, run_config=None, tags=None):
    return dg.materialize(
        [flight_features.to_source_asset(), *assets], selection=selection, resources=resources,
        instance=instance, run_config=FAST_TRAINING if run_config is None else run_config, tags=tags,
        raise_on_error=False,
    )


@pytest.fixture(scope="module")
def champion(tmp_path_factory, mlflow_template_db):
    """One champion and its verified Bento for the module: each test reads it or adds runs beside it
    (batch scores, a Bento that fails parity and is deleted), none changes what the others read."""
    from tests.conftest import make_featured_lake, make_mlflow_registry

    root = tmp_path_factory.mktemp("serving-assets")
    lake, instance = make_featured_lake(root)
    resources = _resources(lake, make_mlflow_registry(root, mlflow_template_db), root)
    chain = [training_set, delay_model, champion_model, bento]
    result = _materialize(chain, chain, resources, instance)
    assert result.success, [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]
    return lake, instance, resources, result


def test_bento_is_built_served_and_equal_to_the_registry_model(champion):
    lake, instance, resources, result = champion
    (parity,) = [c for c in result.get_asset_check_evaluations() if c.check_name == PARITY_CHECK]
    assert parity.passed and parity.metadata["rows"].value > 100
    metadata = result.asset_materializations_for_node("bento")[0].metadata
    assert metadata["model_version"].value == "1"
    assert metadata["size_bytes"].value > 10_000
    assert metadata["bento_tag"].value.startswith("flight_delay_service:")


def test_batch_predictions_equal_online_predictions_of_the_served_bento(champion, tmp_path):
    lake, instance, resources, result = champion
    scored = _materialize([batch_predictions], [batch_predictions], resources, instance, run_config={},
                          tags=range_tags(DAY, DAY))
    assert scored.success
    batch = Warehouse(lake).frame("batch_predictions", DAY)
    features = Warehouse(lake).frame("flight_features", DAY)
    assert len(batch) == len(features) and set(batch["model_version"]) == {"1"}

    import httpx

    bento_tag = result.asset_materializations_for_node("bento")[0].metadata["bento_tag"].value
    serving = resources["bentos"]
    records = records_from_features(features)
    online = []
    # a client sends a day in batches: a busy day holds more flights than one request may (MAX_FLIGHTS_PER_REQUEST)
    with serving.serve(bento_tag, tmp_path / "serve.log", prediction_log_url=str(tmp_path / "online")) as served:
        for start in range(0, len(records), 256):
            response = httpx.post(f"{served.url}/predict", json={"flights": records[start:start + 256]},
                                  headers=served.headers, timeout=60)
            assert response.status_code == 200, response.text
            online += [p["delay_probability"] for p in response.json()]
    online = np.array(online)
    assert np.allclose(online, batch["delay_probability"].to_numpy(), atol=1e-6)


def test_a_bento_that_fails_parity_is_deleted_and_not_materialized(champion):
    import subprocess

    lake, instance, resources, first = champion
    strict = {"ops": {"bento": {"config": {"parity_tolerance": -1.0}}}}
    result = _materialize([bento], [bento], resources, instance, run_config=strict)
    (parity,) = result.get_asset_check_evaluations()
    assert not parity.passed
    assert not result.asset_materializations_for_node("bento")
    listed = subprocess.run([resources["bentos"]._bentoml(), "list", "-o", "json"], env=resources["bentos"].env(),
                            capture_output=True, text=True, check=True).stdout
    assert first.asset_materializations_for_node("bento")[0].metadata["bento_tag"].value in listed
    assert listed.count("flight_delay_service:") == 1, "only the bento that passed is kept"
