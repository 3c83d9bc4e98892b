"""Every object the pipeline writes to an S3 lake carries server-side encryption (a moto server over HTTP).

Landing files, validated Parquet, quarantined files and their reports, features, the run-scoped
training window and the prediction log's files: each is listed from the bucket and asked for its
``ServerSideEncryption``. MLflow artifacts and exported Bentos are covered by the registry's tests.
"""

import datetime as dt

import dagster as dg
import pandas as pd
import pytest

from assets.features import flight_features
from assets.ingest import airports, planes, raw_flights, raw_weather
from assets.training import training_set
from pipelines.partition_ranges import range_tags
from pipelines.replay import replay
from resources.compute import DaskCluster
from resources import io_managers
from resources.storage import LakeStorage
from tests.servers import moto_server

pytestmark = pytest.mark.slow
BUCKET = "hygiene-lake"
DAYS = ("2013-01-01", "2013-01-04")
HELD_BACK = "2013-01-04"


@pytest.fixture
def s3_lake(tmp_path, monkeypatch) -> LakeStorage:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    (tmp_path / "moto").mkdir()
    with moto_server(tmp_path / "moto") as endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)  # the prediction log's s3fs finds the server here
        storage = LakeStorage(url=f"s3://{BUCKET}/lake", endpoint_url=endpoint, region_name="us-east-1")
        storage.s3_client().create_bucket(Bucket=BUCKET)
        yield storage


def _log_predictions(url: str, features: pd.DataFrame) -> int:
    from serving.prediction_log import SCORE, PredictionLog

    log = PredictionLog(url, flush_seconds=3600)
    rows = features.head(50)
    log.append([
        {"request_id": f"r{i}", "date": row["date"], "carrier": row["carrier"], "flight": int(row["flight"]),
         "origin": row["origin"], "dest": row["dest"], "served_at": pd.Timestamp.now(tz="UTC"),
         "model_version": "1", SCORE: 0.2, "inference_ms": 1.0, "batch_size": len(rows)}
        for i, (_, row) in enumerate(rows.iterrows())
    ])
    log.close()
    return log.files_written


def test_every_object_written_to_the_lake_is_encrypted(s3_lake):
    from resources.parquet_io import Warehouse

    replay(s3_lake, *(dt.date.fromisoformat(d) for d in DAYS))
    s3_lake.write_bytes(f"landing/flights/date={HELD_BACK}.csv", b"year,month\n2013,1\n")
    resources = {
        "storage": s3_lake, **io_managers(s3_lake),
        "dask": DaskCluster(n_workers=1, threads_per_worker=1),
    }
    tags = range_tags(*DAYS)
    ingest = dg.materialize([raw_flights, raw_weather, planes, airports], resources=resources, tags=tags, raise_on_error=False)
    assert [e.passed for e in ingest.get_asset_check_evaluations() if e.asset_key.to_user_string() == "raw_flights"] == [False]
    assert dg.materialize([flight_features], resources=resources, tags=range_tags(DAYS[0], "2013-01-03")).success
    window = {"ops": {"training_set": {"config": {"validation_days": 1, "test_days": 1}}}}
    assert dg.materialize([flight_features.to_source_asset(), training_set], resources=resources,
                          selection=[training_set], run_config=window).success
    assert _log_predictions(s3_lake.uri("predictions"), Warehouse(s3_lake).frame("flight_features", DAYS[0])) >= 1

    client = s3_lake.s3_client()
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="lake/")
            for o in page.get("Contents", [])]
    kinds = {k.split("/")[1] if not k.startswith("lake/warehouse/") else "/".join(k.split("/")[1:3]) for k in keys}
    assert {"landing", "quarantine", "predictions", "warehouse/raw_flights", "warehouse/raw_weather",
            "warehouse/flight_features", "warehouse/training_set"} <= kinds
    unencrypted = [k for k in keys if client.head_object(Bucket=BUCKET, Key=k).get("ServerSideEncryption") != "AES256"]
    assert unencrypted == []
