"""The same pipeline on S3: a moto server on 127.0.0.1, real HTTP, the dagster-aws client and s3fs."""

import datetime as dt
import io

import dagster as dg
import pandas as pd
import pytest

from assets.ingest import CONTRACT_CHECK, airports, planes, raw_flights, raw_weather
from pipelines.partition_ranges import range_tags
from pipelines.replay import replay
from resources.storage import LakeStorage
from sensors.landing_zone import landing_zone_sensor
from tests.conftest import resources_for

pytestmark = pytest.mark.slow
BUCKET = "flights-lake"


@pytest.fixture
def s3_lake(s3_endpoint, request) -> LakeStorage:
    storage = LakeStorage(
        url=f"s3://{BUCKET}/{request.node.name[:40]}", endpoint_url=s3_endpoint, region_name="us-east-1"
    )
    client = storage.s3_client()
    if BUCKET not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket=BUCKET)
    return storage


def _head(storage: LakeStorage, key: str) -> dict:
    bucket, prefix = storage.url[len("s3://"):].split("/", 1)
    return storage.s3_client().head_object(Bucket=bucket, Key=f"{prefix}/{key}")


def test_ingestion_on_s3_writes_encrypted_parquet(s3_lake):
    replay(s3_lake, dt.date(2013, 1, 1), dt.date(2013, 1, 2))
    assert _head(s3_lake, "landing/flights/date=2013-01-01.csv")["ServerSideEncryption"] == "AES256"

    result = dg.materialize(
        [raw_flights, raw_weather, planes, airports],
        resources=resources_for(s3_lake),
        tags=range_tags("2013-01-01", "2013-01-02"),
    )
    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations())

    key = "warehouse/raw_flights/2013-01-02.parquet"
    assert _head(s3_lake, key)["ServerSideEncryption"] == "AES256"  # written by s3fs, SSE requested
    flights = pd.read_parquet(io.BytesIO(s3_lake.read_bytes(key)))
    assert len(flights) == 943
    listed = {o.key for o in s3_lake.list("warehouse/raw_weather/")}
    assert listed == {"warehouse/raw_weather/2013-01-01.parquet", "warehouse/raw_weather/2013-01-02.parquet"}


def test_bad_file_on_s3_is_quarantined(s3_lake):
    replay(s3_lake, dt.date(2013, 1, 1), dt.date(2013, 1, 1), datasets=("flights",), with_reference=False)
    s3_lake.write_bytes("landing/flights/date=2013-01-01.csv", b"year,month\n2013,1\n")
    result = dg.materialize(
        [raw_flights], resources=resources_for(s3_lake), partition_key="2013-01-01", raise_on_error=False
    )
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == CONTRACT_CHECK and not check.passed
    assert "missing" in check.description
    assert not s3_lake.exists("warehouse/raw_flights/2013-01-01.parquet")
    assert s3_lake.exists("quarantine/flights/2013-01-01/report.json")


def test_sensor_lists_s3_by_etag(s3_lake):
    replay(s3_lake, dt.date(2013, 1, 5), dt.date(2013, 1, 5), with_reference=False)
    context = dg.build_sensor_context(resources={"storage": s3_lake}, instance=dg.DagsterInstance.ephemeral())
    requests = list(landing_zone_sensor(context))
    assert {r.partition_key for r in requests} == {"2013-01-05"}
    etag = _head(s3_lake, "landing/flights/date=2013-01-05.csv")["ETag"].strip('"')
    assert any(r.run_key.startswith(f"landing/flights/date=2013-01-05.csv@{etag}#") for r in requests)
    again = landing_zone_sensor(
        dg.build_sensor_context(cursor=context.cursor, resources={"storage": s3_lake}, instance=dg.DagsterInstance.ephemeral())
    )
    assert isinstance(again, dg.SkipReason)


def test_features_on_a_scheduler_given_by_address(s3_lake):
    """DASK_SCHEDULER_ADDRESS routes feature work to that scheduler over TCP; workers read S3 themselves."""
    from distributed import LocalCluster

    from assets.features import flight_features
    from resources.compute import DaskCluster

    replay(s3_lake, dt.date(2013, 1, 1), dt.date(2013, 1, 2))
    tags = range_tags("2013-01-01", "2013-01-02")
    assert dg.materialize([raw_flights, raw_weather, planes, airports], resources=resources_for(s3_lake), tags=tags).success
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, protocol="tcp",
                      host="127.0.0.1", dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        resources = {**resources_for(s3_lake), "dask": DaskCluster(scheduler_address=cluster.scheduler_address)}
        result = dg.materialize([flight_features], resources=resources, tags=tags)
    assert result.success
    assert {e.materialization.metadata["engine"].value for e in result.get_asset_materialization_events()} == {"dask"}
    assert {o.key for o in s3_lake.list("warehouse/flight_features/")} == {
        "warehouse/flight_features/2013-01-01.parquet", "warehouse/flight_features/2013-01-02.parquet"
    }


def test_kms_encrypted_lake_names_its_key_on_every_put(s3_lake):
    """``LAKE_SSE=aws:kms`` with ``LAKE_SSE_KMS_KEY_ID``: the bucket's own key, not the account's ``aws/s3`` key."""
    import boto3

    kms = boto3.client("kms", endpoint_url=s3_lake.endpoint_url, region_name="us-east-1")
    key_id = kms.create_key(Description="lake")["KeyMetadata"]["Arn"]
    lake = s3_lake.model_copy(update={"sse": "aws:kms", "sse_kms_key_id": key_id})
    lake.write_bytes("kms/object.bin", b"encrypted with the lake's key")
    head = _head(lake, "kms/object.bin")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == key_id
    assert lake.settings().fsspec_options()["s3_additional_kwargs"] == {
        "ServerSideEncryption": "aws:kms", "SSEKMSKeyId": key_id,
    }
