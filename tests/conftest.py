import datetime as dt
import gc
import os
import tempfile

import pytest

# A test process holds Dagster, torch, pandas and every module fixture: Python's default thresholds
# (700, 10, 10) walk that heap over and over. Rarer collections cut the fast tier's CPU by ~8 %
# (docs/testing.md); cycles are still collected, later.
gc.set_threshold(100_000, 50, 50)

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
# BentoML resolves its stores once per process: give the test session its own, never the user's data/bentoml.
os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="bentoml-tests-")
os.environ["BENTOML_DO_NOT_TRACK"] = "true"
os.environ.pop("SERVICE_API_TOKEN", None)
# Processes started before a test's own AUDIT_URL is set (module-scoped servers) write here, never to data/.
os.environ["AUDIT_URL"] = tempfile.mkdtemp(prefix="audit-tests-")

from pipelines.replay import replay  # noqa: E402
from resources.storage import LakeStorage  # noqa: E402

FIRST_DAYS = (dt.date(2013, 1, 1), dt.date(2013, 1, 3))


@pytest.fixture
def lake(tmp_path) -> LakeStorage:
    """An empty local lake in a temp folder."""
    return LakeStorage(url=str(tmp_path / "lake"))


@pytest.fixture
def replayed_lake(lake) -> LakeStorage:
    """A local lake whose landing zone holds the real flights and weather of 2013-01-01..03."""
    replay(lake, *FIRST_DAYS)
    return lake


def break_wind_readings(storage: LakeStorage, day: str, rows: int, value: str = "1048.36058") -> None:
    """Give ``rows`` of a real day's landed weather an impossible wind speed (a broken feed, not one faulty report)."""
    import io

    import pandas as pd

    from ml.landing import landing_key

    key = landing_key("weather", day)
    frame = pd.read_csv(io.BytesIO(storage.read_bytes(key)), dtype=str, keep_default_na=False)
    frame.loc[frame.index[:rows], "wind_speed"] = value
    storage.write_bytes(key, frame.to_csv(index=False).encode())


def resources_for(storage: LakeStorage) -> dict:
    from resources import io_managers

    return {"storage": storage, **io_managers(storage)}


@pytest.fixture(scope="session")
def service_model(tmp_path_factory):
    """(tag, unit): the model the in-process service serves for the whole session (tests/serving_helpers.py)."""
    from tests.serving_helpers import in_process_service_model

    return in_process_service_model(tmp_path_factory.mktemp("service-unit"))


@pytest.fixture(scope="session")
def mlflow_template_db(tmp_path_factory):
    """A migrated MLflow SQLite schema, made once: creating one costs ~1.6 s, copying it ~1 ms."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


def make_mlflow_registry(root, template_db):
    """An MLflow tracking store + registry under ``root`` (SQLite copied from the session's template, local artifacts)."""
    import shutil

    from resources.mlflow_registry import MlflowRegistry

    db = root / "mlflow" / "mlflow.db"
    db.parent.mkdir(parents=True)
    shutil.copy(template_db, db)
    return MlflowRegistry(
        tracking_uri=f"sqlite:///{db}",
        artifact_location=(root / "mlflow" / "artifacts").as_uri(),
        lock_path=str(root / "mlflow" / "promotion.lock"),
    )


@pytest.fixture
def mlflow_registry(tmp_path, mlflow_template_db):
    """An MLflow tracking store + registry of its own for one test (SQLite, local artifacts)."""
    return make_mlflow_registry(tmp_path, mlflow_template_db)


def chain_resources(storage: LakeStorage, registry) -> dict:
    from resources.compute import DaskCluster, TorchCompute
    from resources.trainer import DistributedTrainer

    return {
        **resources_for(storage),
        "registry": registry,
        "compute": TorchCompute(device="cpu"),
        "trainer": DistributedTrainer(),
        "dask": DaskCluster(n_workers=1, threads_per_worker=2),
    }


@pytest.fixture(autouse=True)
def _own_audit_log(tmp_path, monkeypatch):
    """Each test its own audit log: no test reads records another one wrote."""
    monkeypatch.setenv("AUDIT_URL", str(tmp_path / "audit-log"))


@pytest.fixture(autouse=True)
def _no_leaked_mlflow_uri():
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; a test must not hand its temp store to the next."""
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)


FEATURED_DAYS = ("2013-01-01", "2013-01-28")


@pytest.fixture(scope="session")
def featured_lake_template(tmp_path_factory):
    """``make_featured_lake`` once per session (worker): the tests that train on it get a copy."""
    root = tmp_path_factory.mktemp("featured-template")
    lake, instance = make_featured_lake(root)
    instance.dispose()
    return root / "lake"


@pytest.fixture
def featured_lake(tmp_path, featured_lake_template):
    """Four real weeks ingested and featurised (two single-run backfills, made once per session), copied
    into this test's own lake; with an instance of its own for the runs the test makes."""
    import shutil

    import dagster as dg

    shutil.copytree(featured_lake_template, tmp_path / "lake")
    with dg.DagsterInstance.ephemeral() as instance:
        yield LakeStorage(url=str(tmp_path / "lake")), instance


def make_featured_lake(root):
    """Four real weeks ingested and featurised into ``root/lake`` (two single-run backfills); (lake, instance)."""
    import dagster as dg

    from assets.features import flight_features
    from assets.ingest import airports, planes, raw_flights, raw_weather
    from pipelines.partition_ranges import range_tags

    lake = LakeStorage(url=str(root / "lake"))
    replay(lake, *(dt.date.fromisoformat(d) for d in FEATURED_DAYS))
    instance = dg.DagsterInstance.ephemeral()
    resources = chain_resources(lake, None)
    for assets in ([raw_flights, raw_weather, planes, airports], [flight_features]):
        result = dg.materialize(assets, resources={k: v for k, v in resources.items() if v is not None},
                                tags=range_tags(*FEATURED_DAYS), instance=instance, selection=assets)
        assert result.success
    return lake, instance


@pytest.fixture
def local_instance_env(tmp_path, monkeypatch):
    """A data dir and a Dagster home on the shipped local instance config, as `make demo` sets them up.

    Short sensor ticks, no retraining cooldown, nothing of the caller's lake, registry or alerting;
    ``PYTHONPATH`` names this checkout, so a daemon's code server imports the code under test.
    """
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((root / "deploy" / "dagster-local.yaml").read_text())
    for name, value in {
        "DATA_DIR": str(tmp_path / "data"), "DAGSTER_HOME": str(home), "BENTOML_HOME": str(tmp_path / "bentoml"),
        "PREDICTION_LOG_URL": str(tmp_path / "data" / "lake" / "predictions"),
        "RETRAIN_COOLDOWN_S": "0", "SENSOR_INTERVAL_S": "5",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("LAKE_URL", "MLFLOW_TRACKING_URI", "ALERT_WEBHOOK_URL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    """A moto S3 server over HTTP for the module's tests, with throwaway AWS credentials in the environment."""
    from tests.servers import moto_server

    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        with moto_server(tmp_path_factory.mktemp("moto")) as endpoint:
            yield endpoint


def postgres_unavailable(host: str, port: int, user: str, password: str) -> str | None:
    """Why Postgres cannot be used from here (what to install or start), or None when a connection works."""
    try:
        import psycopg2
    except ImportError:
        return "psycopg2 is not installed: pip install psycopg2-binary (the project's dev extras have it)"
    try:
        psycopg2.connect(host=host, port=port, user=user, password=password, dbname="postgres", connect_timeout=3).close()
    except psycopg2.OperationalError as exc:
        return (f"no PostgreSQL server accepts {user}@{host}:{port} ({str(exc).strip().splitlines()[0]}): install "
                "PostgreSQL (e.g. apt-get install postgresql) and start it, or point DAGSTER_PG_HOST / "
                "DAGSTER_PG_USER / DAGSTER_PG_PASSWORD at one")
    return None


def postgres_missing(reason: str, required: bool):
    """Skip the test for ``reason``; fail it instead where Postgres is required (``REQUIRE_POSTGRES=1``, CI)."""
    if required:
        pytest.fail(f"REQUIRE_POSTGRES is set, but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server() -> dict:
    """The machine's Postgres (host, port, user): skipped with what to install where it is missing, failed under REQUIRE_POSTGRES=1."""
    from infra import settings

    postgres = settings.postgres()
    server = {"host": postgres.host, "port": 5432, "user": postgres.user}
    reason = postgres_unavailable(**server, password=postgres.password.get_secret_value())
    if reason:
        postgres_missing(reason, settings.ci().require_postgres)
    return server
