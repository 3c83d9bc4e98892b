"""landing_zone_sensor against a real local landing zone."""

import datetime as dt
import os
import time

import dagster as dg
import pytest

from pipelines.replay import replay
from resources.storage import LakeStorage
from sensors.landing_zone import LandingCursor, landing_zone_sensor


def _tick(storage, cursor=None, instance=None):
    context = dg.build_sensor_context(
        cursor=cursor, resources={"storage": storage}, instance=instance or dg.DagsterInstance.ephemeral()
    )
    result = landing_zone_sensor(context)
    return result, context.cursor


def _requests(result):
    return [] if isinstance(result, dg.SkipReason) else list(result)


def test_each_new_file_requests_its_own_partition(lake):
    replay(lake, dt.date(2013, 1, 1), dt.date(2013, 1, 2), with_reference=False)
    result, cursor = _tick(lake)
    requests = _requests(result)
    assert sorted((r.partition_key, r.asset_selection[0].to_user_string()) for r in requests) == [
        ("2013-01-01", "raw_flights"),
        ("2013-01-01", "raw_weather"),
        ("2013-01-02", "raw_flights"),
        ("2013-01-02", "raw_weather"),
    ]
    assert all(r.run_key.startswith("landing/") and "@" in r.run_key for r in requests)
    assert cursor


def test_a_file_seen_twice_runs_once_and_the_cursor_survives_a_restart(lake):
    replay(lake, dt.date(2013, 1, 1), dt.date(2013, 1, 1), with_reference=False)
    _, cursor = _tick(lake)
    again, cursor_after = _tick(lake, cursor)  # a new sensor process, given the stored cursor
    assert isinstance(again, dg.SkipReason)
    assert cursor_after == cursor


def test_only_the_new_day_is_requested(lake):
    replay(lake, dt.date(2013, 1, 1), dt.date(2013, 1, 1), with_reference=False)
    _, cursor = _tick(lake)
    time.sleep(0.01)
    replay(lake, dt.date(2013, 1, 2), dt.date(2013, 1, 2), datasets=("flights",), with_reference=False)
    result, _ = _tick(lake, cursor)
    assert [(r.partition_key, r.asset_selection[0].path[-1]) for r in _requests(result)] == [("2013-01-02", "raw_flights")]


def test_a_changed_file_runs_again_with_a_new_run_key(lake):
    replay(lake, dt.date(2013, 1, 1), dt.date(2013, 1, 1), datasets=("flights",), with_reference=False)
    first, cursor = _tick(lake)
    (first_request,) = _requests(first)
    key = "landing/flights/date=2013-01-01.csv"
    time.sleep(0.01)
    lake.write_bytes(key, lake.read_bytes(key) + b"")  # same bytes, rewritten: a new delivery
    path = os.path.join(lake.url, key)
    os.utime(path, ns=(time.time_ns(), time.time_ns()))
    second, _ = _tick(lake, cursor)
    (second_request,) = _requests(second)
    assert second_request.partition_key == "2013-01-01"
    assert second_request.run_key != first_request.run_key


def test_badly_named_and_out_of_range_files_are_ignored(lake):
    lake.write_bytes("landing/flights/notes.txt", b"hello")
    lake.write_bytes("landing/flights/date=2013-02-30.csv", b"x")
    lake.write_bytes("landing/flights/date=2019-01-01.csv", b"x")
    result, cursor = _tick(lake)
    assert isinstance(result, dg.SkipReason)
    assert "none a daily landing file still to ingest" in result.skip_message
    assert LandingCursor.parse(cursor).since > 0  # seen: not re-listed as new on the next tick


def test_unreachable_storage_skips_the_tick_without_crashing(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    storage = LakeStorage(
        url="s3://nowhere/lake", endpoint_url="http://127.0.0.1:9", region_name="us-east-1", max_attempts=1
    )
    result, cursor = _tick(storage, cursor=LandingCursor(since=5.0).dump())
    assert isinstance(result, dg.SkipReason) and "cannot list" in result.skip_message
    assert LandingCursor.parse(cursor).since == 5.0


@pytest.mark.parametrize(
    ("objects_since", "expected_new"),
    [(0.0, 2), (2.0, 0)],
)
def test_cursor_logic(objects_since, expected_new):
    from resources.storage import StoredObject
    from sensors.landing_zone import new_objects

    objects = [StoredObject("a", "v1", 1.0), StoredObject("b", "v1", 2.0)]
    cursor = LandingCursor(since=objects_since, at_since={"b": "v1"} if objects_since else {})
    fresh, _ = new_objects(objects, cursor)
    assert len(fresh) == expected_new


def test_files_ingested_after_they_landed_are_not_requested_again(lake):
    """After `make run` ingested a month, a sensor with a fresh cursor must not start a storm of reruns."""
    from assets.ingest import raw_flights
    from pipelines.partition_ranges import range_tags
    from tests.conftest import resources_for

    replay(lake, dt.date(2013, 1, 1), dt.date(2013, 1, 2), datasets=("flights",), with_reference=False)
    instance = dg.DagsterInstance.ephemeral()
    dg.materialize([raw_flights], resources=resources_for(lake), instance=instance, tags=range_tags("2013-01-01", "2013-01-01"))
    result, _ = _tick(lake, instance=instance)
    assert [r.partition_key for r in _requests(result)] == ["2013-01-02"]
