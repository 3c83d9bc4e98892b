"""Registry faults: hostile artifacts are refused wherever a unit is loaded; promotion survives kill -9 and races.

Real MLflow stores (SQLite + local artifacts), real Dagster materializations, real processes
killed with SIGKILL and racing on the real promotion lock.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from resources.mlflow_registry import CHAMPION_ALIAS, PROMOTION_TAGS, UNIT_DIGEST_TAG, MlflowRegistry, PromotionConflict

pytestmark = pytest.mark.server  # promotions in child processes, Bento builds: not in make test-fast
SPAWN = multiprocessing.get_context("spawn")
DAY = "2013-01-02"


class _Payload:
    """Unpickling this writes ``marker``: what a hostile weights file would do instead."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def features() -> pd.DataFrame:
    """Real features of 2013-01-01..02 (no lake, no Dagster: the registry is under test here)."""
    from ml.contracts import AIRPORTS, FLIGHTS, PLANES, WEATHER
    from ml.features import build_features
    from ml.parsing import parse_frame
    from ml.reference_data import read_table

    keep = lambda t: t[(t.month == "1") & (t.day.astype(int) <= 2)].reset_index(drop=True)  # noqa: E731
    return build_features(
        parse_frame(keep(read_table("flights")), FLIGHTS, "f").frame,
        parse_frame(keep(read_table("weather")), WEATHER, "w").frame,
        parse_frame(read_table("planes"), PLANES, "p").frame,
        parse_frame(read_table("airports"), AIRPORTS, "a").frame,
    )


def _register(registry: MlflowRegistry, features: pd.DataFrame) -> str:
    """An untrained but real unit, logged and registered as delay_model does it (digest included)."""
    import mlflow

    from resources.mlflow_registry import register_unit
    from ml.features import CATEGORICAL_FEATURES, FEATURE_COLUMNS, NUMERIC_FEATURES
    from ml.model import ModelConfig, ModelUnit
    from ml.preprocess import Preprocessor

    unit = ModelUnit.create(Preprocessor.fit(features, CATEGORICAL_FEATURES, NUMERIC_FEATURES), ModelConfig())
    registry.client()
    with mlflow.start_run(experiment_id=registry.experiment_id()):
        return register_unit(registry, unit, features[list(FEATURE_COLUMNS)].head(5))


def _stored_model(registry: MlflowRegistry, version: str) -> Path:
    """Where the artifact store keeps a version's files (a local folder in these tests)."""
    client = registry.client()
    model_id = client.get_model_version(registry.model_name, version).source.rsplit("/", 1)[-1]
    location = client.get_logged_model(model_id).artifact_location
    assert location.startswith("file://")
    return Path(location[len("file://"):])


def _tamper(registry: MlflowRegistry, version: str, how: str, marker: Path) -> None:
    import torch

    from ml.model import unit_digest

    unit = _stored_model(registry, version) / "artifacts" / "unit"
    if how == "pickled weights":  # an attacker who can write artifacts and tags: the digest matches
        torch.save({"payload": _Payload(str(marker))}, unit / "weights.pt")
        registry.client().set_model_version_tag(registry.model_name, version, UNIT_DIGEST_TAG, unit_digest(unit))
    elif how == "tampered unit":
        (unit / "unit.json").write_text((unit / "unit.json").read_text().replace('"dropout"', '"dropout" '))
    elif how == "no digest":
        registry.client().delete_model_version_tag(registry.model_name, version, UNIT_DIGEST_TAG)


def _failure_message(result: dg.ExecuteInProcessResult) -> str:
    return " ".join(e.step_failure_data.error.message for e in result.all_events if e.is_step_failure)


@pytest.mark.parametrize("how", ["pickled weights", "tampered unit", "no digest"])
def test_a_hostile_champion_is_refused_by_comparison_bento_build_and_batch_scoring(
    how, features, mlflow_registry, tmp_path
):
    from assets.features import flight_features
    from assets.training import _champion_for_judging
    from assets.inference import batch_predictions, bento
    from pipelines.partition_ranges import range_tags
    from resources import io_managers
    from resources.bento_store import BentoStore
    from resources.storage import LakeStorage

    version = _register(mlflow_registry, features)
    mlflow_registry.promote(version, None, promoted_by="test", reason="the registered champion")
    assert len(_champion_for_judging(mlflow_registry).unit.predict_proba(features)) == len(features)  # intact, it loads
    marker = tmp_path / "payload-ran"
    _tamper(mlflow_registry, version, how, marker)

    with pytest.raises(dg.Failure, match="refused"):
        _champion_for_judging(mlflow_registry)

    lake = LakeStorage(url=str(tmp_path / "lake"))
    serving = BentoStore(bentoml_home=str(tmp_path / "bentoml"), prediction_log_url=str(tmp_path / "plog"))
    resources = {"registry": mlflow_registry, "bentos": serving, "storage": lake,
                 **io_managers(lake)}
    built = dg.materialize([bento], resources=resources, raise_on_error=False)
    assert not built.success and "refused" in _failure_message(built)
    assert serving.stored() == {"bentos": [], "models": []}, "nothing of it reached BentoML's stores"

    scored = dg.materialize([flight_features.to_source_asset(), batch_predictions], selection=[batch_predictions],
                            resources=resources, tags=range_tags(DAY, DAY), raise_on_error=False)
    assert not scored.success and "refused" in _failure_message(scored)
    assert not lake.list("warehouse/batch_predictions/")
    assert not marker.exists(), "the pickle payload ran"


def test_the_payload_is_live(tmp_path):
    """The hostile weights above do run when unpickled the unsafe way: their refusal is what kept the marker away."""
    import torch

    marker = tmp_path / "payload-ran"
    torch.save({"payload": _Payload(str(marker))}, tmp_path / "weights.pt")
    torch.load(tmp_path / "weights.pt", weights_only=False)
    assert marker.exists()


def test_the_bento_build_verifies_the_unit_before_it_reaches_the_model_store(features, mlflow_registry, tmp_path):
    """`python -m serving.build` itself refuses a unit whose files are not the registered ones."""
    from resources.bento_store import BentoStore

    version = _register(mlflow_registry, features)
    unit = mlflow_registry.download_verified_unit(version, str(tmp_path / "download"))
    digest = mlflow_registry.registered_digest(version)
    (unit / "unit.json").write_text((unit / "unit.json").read_text() + " ")
    serving = BentoStore(bentoml_home=str(tmp_path / "bentoml"), prediction_log_url=str(tmp_path / "plog"))
    with pytest.raises(RuntimeError, match="refused.*does not match the registered"):
        serving.build(unit, digest, version, "run", mlflow_registry.model_uri(version))
    assert serving.stored()["models"] == []


def _versions(registry: MlflowRegistry, count: int) -> list[str]:
    client = registry.client()
    client.create_registered_model(registry.model_name)
    return [str(client.create_model_version(registry.model_name, source=f"file:///m/{i}").version) for i in range(count)]


def _registry(tracking_uri: str, lock_path: str) -> MlflowRegistry:
    return MlflowRegistry(tracking_uri=tracking_uri, lock_path=lock_path)


def _promote_and_hang(tracking_uri: str, lock_path: str, version: str, expected: str, moved: str) -> None:
    """Child process: promote, but stop dead between moving the alias and writing its audit tags."""
    from mlflow import MlflowClient

    def hang(*args, **kwargs):
        Path(moved).touch()
        time.sleep(600)

    MlflowClient.set_model_version_tag = hang
    _registry(tracking_uri, lock_path).promote(version, expected, promoted_by="killed run", reason="crashed")


def _wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout_s:.0f} s for {what}")
        time.sleep(0.1)


def test_a_promotion_killed_between_alias_and_tags_completes_on_rerun_once(mlflow_registry, tmp_path):
    v1, v2 = _versions(mlflow_registry, 2)
    mlflow_registry.promote(v1, None, promoted_by="first", reason="first")
    moved = tmp_path / "alias-moved"
    child = SPAWN.Process(target=_promote_and_hang, args=(
        mlflow_registry.tracking_uri, mlflow_registry.lock_path, v2, v1, str(moved)))
    child.start()
    try:
        _wait_for(lambda: moved.exists() or not child.is_alive(), 120, "the child to move the alias")
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.join()
    assert child.exitcode == -signal.SIGKILL
    client = mlflow_registry.client()
    assert mlflow_registry.champion_version() == v2
    assert not set(PROMOTION_TAGS) & set(client.get_model_version(mlflow_registry.model_name, v2).tags)

    rerun = _registry(mlflow_registry.tracking_uri, mlflow_registry.lock_path)  # the lock died with the child
    assert rerun.promote(v2, v1, promoted_by="rerun", reason="the same candidate") == v1
    tags = client.get_model_version(mlflow_registry.model_name, v2).tags
    assert {tags[k] for k in ("previous_version", "promoted_by")} == {v1, "rerun"} and tags["promoted_at"]
    assert rerun.promote(v2, v1, promoted_by="again", reason="a second rerun") == v1
    assert client.get_model_version(mlflow_registry.model_name, v2).tags["promoted_by"] == "rerun", "promoted once"
    assert str(client.get_model_version_by_alias(mlflow_registry.model_name, CHAMPION_ALIAS).version) == v2
    with pytest.raises(PromotionConflict):
        rerun.promote(v1, None, promoted_by="stale", reason="v1 was judged against no champion")


def _race(tracking_uri: str, lock_path: str, version: str, barrier, results) -> None:
    registry = _registry(tracking_uri, lock_path)
    registry.champion_version()  # open the store before the race
    barrier.wait()
    try:
        registry.promote(version, None, promoted_by=f"process {os.getpid()}", reason="race")
        results.put((version, "won"))
    except PromotionConflict:
        results.put((version, "conflict"))
    except Exception as exc:  # noqa: BLE001 - the parent reports whatever else happened
        results.put((version, f"error: {exc!r}"[:500]))


def test_two_processes_promoting_at_once_make_exactly_one_champion(mlflow_registry):
    first, second = _versions(mlflow_registry, 2)
    barrier, results = SPAWN.Barrier(2), SPAWN.Queue()
    children = [SPAWN.Process(target=_race, args=(mlflow_registry.tracking_uri, mlflow_registry.lock_path, v,
                                                  barrier, results)) for v in (first, second)]
    for child in children:
        child.start()
    outcomes = dict(results.get(timeout=180) for _ in children)
    for child in children:
        child.join()
    assert sorted(outcomes.values()) == ["conflict", "won"], outcomes
    (winner,) = [v for v, o in outcomes.items() if o == "won"]
    champion = mlflow_registry.client().get_model_version_by_alias(mlflow_registry.model_name, CHAMPION_ALIAS)
    assert str(champion.version) == winner and champion.tags["previous_version"] == "none"
