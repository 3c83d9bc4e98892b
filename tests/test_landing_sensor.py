"""landing_zone_sensor against a real local landing zone."""

import datetime as dt
import os
import shutil
import time

import dagster as dg
import pytest

from assets.partitions import daily_partitions
from ml.reference_data import daily_csvs
from pipelines.replay import replay
from resources.storage import LakeStorage, content_version
from sensors.landing_zone import LandingCursor, landing_zone_sensor, plan_runs


def _tick(storage, cursor=None, instance=None):
    context = dg.build_sensor_context(
        cursor=cursor, resources={"storage": storage}, instance=instance or dg.DagsterInstance.ephemeral()
    )
    result = landing_zone_sensor(context)
    return result, context.cursor


class _Log:
    """Stands in for the sensor's logger: keeps what it was told."""

    def __init__(self):
        self.warnings: list[str] = []

    def warning(self, message):
        self.warnings.append(message)

    def info(self, message):
        pass


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
    lake.write_bytes(key, lake.read_bytes(key).replace(b"\n", b"\r\n"))  # new bytes: a new delivery
    second, cursor = _tick(lake, cursor)
    (second_request,) = _requests(second)
    assert second_request.partition_key == "2013-01-01"
    assert second_request.run_key != first_request.run_key
    assert second_request.tags["landing/version"] == content_version(lake.read_bytes(key))


def test_identical_bytes_rewritten_are_no_change(lake):
    """The version names the bytes: a producer re-sending the same file does not rerun the day.

    (Before versions were content digests, a rewrite of the same bytes with a new mtime ran again.)
    """
    replay(lake, dt.date(2013, 1, 1), dt.date(2013, 1, 1), datasets=("flights",), with_reference=False)
    _, cursor = _tick(lake)
    key = "landing/flights/date=2013-01-01.csv"
    lake.write_bytes(key, lake.read_bytes(key))
    os.utime(os.path.join(lake.url, key), ns=(time.time_ns(), time.time_ns()))
    again, _ = _tick(lake, cursor)
    assert isinstance(again, dg.SkipReason)


def test_a_file_landing_with_an_older_mtime_is_requested(lake, tmp_path):
    """`cp -p`, `rsync -a` and `tar x` keep the producer's mtime: older than what the sensor saw last."""
    replay(lake, dt.date(2013, 1, 2), dt.date(2013, 1, 2), datasets=("flights",), with_reference=False)
    _, cursor = _tick(lake)
    staged = tmp_path / "producer" / "date=2013-01-01.csv"
    staged.parent.mkdir()
    staged.write_bytes(next(daily_csvs("flights", dt.date(2013, 1, 1), dt.date(2013, 1, 1)))[1])
    a_week_ago = time.time() - 7 * 86400
    os.utime(staged, (a_week_ago, a_week_ago))
    shutil.copy2(staged, os.path.join(lake.url, "landing/flights/date=2013-01-01.csv"))  # cp -p
    result, _ = _tick(lake, cursor)
    assert [r.partition_key for r in _requests(result)] == ["2013-01-01"]


def test_a_file_rewritten_while_its_run_is_in_flight_runs_again(lake):
    """The run read version A; B landed before it finished: B is not "already ingested"."""
    from assets.ingest import raw_flights
    from tests.conftest import resources_for

    replay(lake, dt.date(2013, 1, 1), dt.date(2013, 1, 1), datasets=("flights",), with_reference=False)
    instance = dg.DagsterInstance.ephemeral()
    first, cursor = _tick(lake, instance=instance)
    (request,) = _requests(first)
    time.sleep(0.01)
    started = time.time()
    assert dg.materialize(
        [raw_flights], resources=resources_for(lake), instance=instance,
        partition_key=request.partition_key, tags=request.tags,
    ).success
    key = "landing/flights/date=2013-01-01.csv"
    lake.write_bytes(key, lake.read_bytes(key).replace(b"\n", b"\r\n"))
    os.utime(os.path.join(lake.url, key), (started, started))  # it landed while the run was running
    second, _ = _tick(lake, cursor, instance=instance)
    (again,) = _requests(second)
    assert again.tags["landing/version"] == content_version(lake.read_bytes(key)) != request.tags["landing/version"]


def test_a_run_ingests_the_version_of_its_run_key_or_fails_saying_the_file_changed(lake):
    from assets.ingest import raw_flights
    from tests.conftest import resources_for

    replay(lake, dt.date(2013, 1, 1), dt.date(2013, 1, 1), datasets=("flights",), with_reference=False)
    instance = dg.DagsterInstance.ephemeral()
    first, cursor = _tick(lake, instance=instance)
    (stale,) = _requests(first)
    key = "landing/flights/date=2013-01-01.csv"
    new_bytes = lake.read_bytes(key).replace(b"\n", b"\r\n")
    lake.write_bytes(key, new_bytes)  # after the tick, before the run reads it

    result = dg.materialize(
        [raw_flights], resources=resources_for(lake), instance=instance,
        partition_key=stale.partition_key, tags=stale.tags, raise_on_error=False,
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.user_failure_data.description
    assert f"changed since version {stale.tags['landing/version']} was seen" in message
    assert content_version(new_bytes) in message and "new run" in message
    assert not lake.exists("warehouse/raw_flights/2013-01-01.parquet")

    second, _ = _tick(lake, cursor, instance=instance)
    (fresh,) = _requests(second)
    result = dg.materialize(
        [raw_flights], resources=resources_for(lake), instance=instance,
        partition_key=fresh.partition_key, tags=fresh.tags,
    )
    (materialization,) = result.asset_materializations_for_node("raw_flights")
    assert materialization.metadata["landing/version"].value == content_version(new_bytes)
    assert materialization.metadata["landing/key"].value == key


def test_badly_named_and_out_of_range_files_are_ignored_once(lake):
    lake.write_bytes("landing/flights/notes.txt", b"hello")
    lake.write_bytes("landing/flights/date=2013-02-30.csv", b"x")
    lake.write_bytes("landing/flights/date=2019-01-01.csv", b"x")
    lake.write_bytes("landing/flights/date=2013-01-05.csv.gz", b"\x1f\x8b")
    lake.write_bytes("landing/flights/old/date=2013-01-06.csv", b"x")
    listed = [("flights", o) for o in lake.list("landing/flights/")]
    cursor, log = LandingCursor(), _Log()
    assert plan_runs(listed, cursor, dg.DagsterInstance.ephemeral(), log) == []
    assert len(log.warnings) == 5
    assert any("compressed files are not accepted" in w and "date=2013-01-05.csv.gz" in w for w in log.warnings)
    assert any("sub-folder" in w for w in log.warnings)
    again = _Log()
    assert plan_runs(listed, LandingCursor.parse(cursor.dump()), dg.DagsterInstance.ephemeral(), again) == []
    assert again.warnings == []


def test_unreachable_storage_skips_the_tick_without_crashing(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    storage = LakeStorage(
        url="s3://nowhere/lake", endpoint_url="http://127.0.0.1:9", region_name="us-east-1", max_attempts=1
    )
    stored = LandingCursor(seen={"flights": {"2013-01-01": "abc"}}).dump()
    result, cursor = _tick(storage, cursor=stored)
    assert isinstance(result, dg.SkipReason) and "cannot list" in result.skip_message
    assert cursor == stored


def test_a_cursor_of_the_old_format_starts_over_without_a_storm(lake):
    """The mtime cursor of earlier releases is dropped; what was ingested is known from the instance."""
    from assets.ingest import raw_flights
    from pipelines.partition_ranges import range_tags
    from tests.conftest import resources_for

    replay(lake, dt.date(2013, 1, 1), dt.date(2013, 1, 2), datasets=("flights",), with_reference=False)
    instance = dg.DagsterInstance.ephemeral()
    dg.materialize([raw_flights], resources=resources_for(lake), instance=instance, tags=range_tags("2013-01-01", "2013-01-02"))
    old = '{"at_since": {"landing/flights/date=2013-01-02.csv": "1-2"}, "since": 1700000000.0}'
    result, cursor = _tick(lake, old, instance=instance)
    assert isinstance(result, dg.SkipReason)
    assert set(LandingCursor.parse(cursor).seen["flights"]) == {"2013-01-01", "2013-01-02"}


def test_the_cursor_stays_bounded_and_forgotten_days_fall_back_to_the_instance(lake, monkeypatch):
    from assets.ingest import raw_flights
    from pipelines.partition_ranges import range_tags
    from sensors import landing_zone
    from tests.conftest import resources_for

    monkeypatch.setattr(landing_zone, "MAX_TRACKED", 2)
    replay(lake, dt.date(2013, 1, 1), dt.date(2013, 1, 3), datasets=("flights",), with_reference=False)
    instance = dg.DagsterInstance.ephemeral()
    first, cursor = _tick(lake, instance=instance)
    assert len(_requests(first)) == 3
    assert set(LandingCursor.parse(cursor).seen["flights"]) == {"2013-01-02", "2013-01-03"}
    # 2013-01-01 is no longer in the cursor: once ingested, the instance says so, tick after tick
    dg.materialize([raw_flights], resources=resources_for(lake), instance=instance, tags=range_tags("2013-01-01", "2013-01-03"))
    for _ in range(2):
        result, cursor = _tick(lake, cursor, instance=instance)
        assert isinstance(result, dg.SkipReason)
    key = "landing/flights/date=2013-01-01.csv"
    lake.write_bytes(key, lake.read_bytes(key).replace(b"\n", b"\r\n"))
    result, cursor = _tick(lake, cursor, instance=instance)
    assert [r.partition_key for r in _requests(result)] == ["2013-01-01"]
    assert len(LandingCursor.parse(cursor).seen["flights"]) == 2


def test_a_year_of_files_keeps_a_small_cursor():
    cursor = LandingCursor()
    for day in daily_partitions.get_partition_keys():
        for dataset in ("flights", "weather"):
            cursor.remember(dataset, day, content_version(day.encode() + dataset.encode()))
    cursor.bound()
    assert len(cursor.dump()) < 25_000


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


def test_a_version_that_comes_back_after_another_was_ingested_runs_again(lake):
    """A, then B ingested, then A again: the lake holds B, so A needs a run Dagster will not skip."""
    from assets.ingest import raw_flights
    from tests.conftest import resources_for

    replay(lake, dt.date(2013, 1, 1), dt.date(2013, 1, 1), datasets=("flights",), with_reference=False)
    instance = dg.DagsterInstance.ephemeral()
    key = "landing/flights/date=2013-01-01.csv"
    a = lake.read_bytes(key)
    keys = []
    cursor = None
    for data in (a, a.replace(b"\n", b"\r\n"), a):
        lake.write_bytes(key, data)
        result, cursor = _tick(lake, cursor, instance=instance)
        (request,) = _requests(result)
        assert dg.materialize(
            [raw_flights], resources=resources_for(lake), instance=instance,
            partition_key=request.partition_key, tags=request.tags,
        ).success
        keys.append(request.run_key)
    assert len(set(keys)) == 3


def _change_seats(storage, tailnum: str, seats: int) -> None:
    """A new version of landing/reference/planes.csv in which one aircraft's seat count changed."""
    import io

    import pandas as pd

    from ml.landing import reference_key

    frame = pd.read_csv(io.BytesIO(storage.read_bytes(reference_key("planes"))), dtype=str, keep_default_na=False)
    assert (frame["tailnum"] == tailnum).sum() == 1
    frame.loc[frame["tailnum"] == tailnum, "seats"] = str(seats)
    storage.write_bytes(reference_key("planes"), frame.to_csv(index=False).encode())


def test_a_new_version_of_a_reference_table_is_ingested_and_the_next_feature_day_uses_it(lake):
    """planes.csv and airports.csv are tracked by content version like the daily files: a changed
    planes.csv requests a `planes` run for exactly that version, and features built after it use it."""
    from assets.features import flight_features
    from assets.ingest import airports, planes, raw_flights, raw_weather
    from pipelines.partition_ranges import range_tags
    from tests.conftest import chain_resources, resources_for

    day = "2013-01-02"
    replay(lake, dt.date(2013, 1, 2), dt.date(2013, 1, 2))
    instance = dg.DagsterInstance.ephemeral()
    first, cursor = _tick(lake, instance=instance)
    reference = sorted(r.asset_selection[0].to_user_string() for r in _requests(first) if r.partition_key is None)
    assert reference == ["airports", "planes"]
    assert all(r.tags["landing/key"].startswith("landing/reference/") for r in _requests(first) if r.partition_key is None)

    resources = resources_for(lake)
    assert dg.materialize([raw_flights, raw_weather, planes, airports], resources=resources, instance=instance,
                          tags=range_tags(day, day), selection=[raw_flights, raw_weather]).success
    for request in _requests(first):
        if request.partition_key is None:  # the sensor's reference requests, run as the daemon would
            assert dg.materialize([planes, airports], resources=resources, instance=instance, tags=request.tags,
                                  selection=request.asset_selection).success
    quiet, cursor = _tick(lake, cursor, instance=instance)
    assert _requests(quiet) == []

    import io

    import pandas as pd

    flights = pd.read_parquet(io.BytesIO(lake.read_bytes(f"warehouse/raw_flights/{day}.parquet")))
    known = pd.read_parquet(io.BytesIO(lake.read_bytes("warehouse/planes.parquet")))["tailnum"]
    tail = flights.loc[flights["tailnum"].isin(known), "tailnum"].iloc[0]
    legs = flights.loc[flights["tailnum"] == tail, ["carrier", "flight", "origin"]]
    _change_seats(lake, tail, 999)
    changed, cursor = _tick(lake, cursor, instance=instance)
    (request,) = _requests(changed)
    assert request.asset_selection == [dg.AssetKey("planes")] and request.partition_key is None
    assert request.tags["landing/version"] == content_version(lake.read_bytes("landing/reference/planes.csv"))
    assert dg.materialize([planes], resources=resources, instance=instance, tags=request.tags,
                          selection=request.asset_selection).success
    assert _requests(_tick(lake, cursor, instance=instance)[0]) == [], "an ingested version is not requested again"

    features = dg.materialize([flight_features], resources=chain_resources(lake, None), instance=instance,
                              partition_key=day, selection=[flight_features])
    assert features.success
    rows = pd.read_parquet(io.BytesIO(lake.read_bytes(f"warehouse/flight_features/{day}.parquet")))
    mine = rows.merge(legs.astype({"flight": rows["flight"].dtype}), on=["carrier", "flight", "origin"])
    assert len(mine) == len(legs) > 0
    assert (mine["plane_seats"] == 999).all() and (rows["plane_seats"] == 999).sum() == len(legs)


def test_bounding_the_cursor_never_forgets_a_reference_table():
    cursor = LandingCursor()
    cursor.remember("reference", "planes", "v1")
    for day in ("2013-01-01", "2013-01-02", "2013-01-03"):
        cursor.remember("flights", day, "v")
    cursor.bound(max_tracked=2)
    assert cursor.knows("reference", "planes", "v1")
    assert list(cursor.seen["flights"]) == ["2013-01-03"]
