"""A storm on the landing zone: 50 files, duplicates, rewrites, old mtimes, changes between ticks and in flight.

The real ``landing_zone_sensor`` ticks through ``dg.build_sensor_context`` on a real Dagster
instance, each tick a fresh evaluation given only the stored cursor (as a new sensor process is).
Runs it requests are executed with ``dg.materialize`` and their run tags, as the daemon would. What
must hold: the runs requested are exactly the distinct (file, version) pairs the sensor could see,
none missed, none twice; a run whose file changed before it read it fails saying so.
"""

import datetime as dt
import hashlib
import os
import shutil
import time

import dagster as dg
import pytest

from assets.ingest import raw_flights, raw_weather
from ml.landing import landing_key
from ml.reference_data import daily_csvs
from resources.storage import LakeStorage, content_version
from sensors.landing_zone import landing_zone_sensor
from tests.conftest import resources_for

DAYS = [dt.date(2013, 2, 1) + dt.timedelta(days=i) for i in range(25)]
ASSETS = {"flights": raw_flights, "weather": raw_weather}
YEAR = 365 * 86400


def _deliveries() -> dict[str, bytes]:
    """The 50 real files of 2013-02-01..25, flights and weather, by landing key."""
    files = {}
    for dataset in ASSETS:
        for day, data in daily_csvs(dataset, DAYS[0], DAYS[-1]):
            files[landing_key(dataset, day.isoformat())] = data
    assert len(files) == 50
    return files


def _changed(data: bytes) -> bytes:
    """The same rows in new bytes (one more trailing blank line): a new version, never an old one."""
    return data + b"\n"


class Storm:
    """The landing zone, the instance and the stored cursor; each tick is a new sensor evaluation."""

    def __init__(self, lake: LakeStorage, instance: dg.DagsterInstance, version_of, staging=None):
        self.lake, self.instance, self.version_of, self.staging = lake, instance, version_of, staging
        self.cursor: str | None = None
        self.requested: list[tuple[str, str]] = []
        self.requests: dict[tuple[str, str], dg.RunRequest] = {}
        self.run_keys: list[str] = []

    def deliver(self, key: str, data: bytes, mtime: float | None = None, copy: bool = False) -> tuple[str, str]:
        """Land ``data`` at ``key``: written, or copied with ``shutil.copy2`` (keeps mtime), or backdated."""
        if copy and self.staging is not None:
            staged = self.staging / key.replace("/", "_")
            staged.write_bytes(data)
            os.utime(staged, (mtime, mtime))
            target = os.path.join(self.lake.url, key)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(staged, target)
        else:
            self.lake.write_bytes(key, data)
            if mtime is not None and not self.lake.is_s3:
                os.utime(os.path.join(self.lake.url, key), (mtime, mtime))
        return key, self.version_of(data)

    def tick(self) -> set[tuple[str, str]]:
        context = dg.build_sensor_context(cursor=self.cursor, resources={"storage": self.lake}, instance=self.instance)
        result = landing_zone_sensor(context)
        self.cursor = context.cursor
        requests = [] if isinstance(result, dg.SkipReason) else list(result)
        pairs = [(r.tags["landing/key"], r.tags["landing/version"]) for r in requests]
        self.requested.extend(pairs)
        self.run_keys.extend(r.run_key for r in requests)
        self.requests.update(zip(pairs, requests))
        return set(pairs)

    def run(self, pair: tuple[str, str]) -> dg.ExecuteInProcessResult:
        request = self.requests[pair]
        dataset = pair[0].split("/")[1]
        return dg.materialize(
            [ASSETS[dataset]], resources=resources_for(self.lake), instance=self.instance,
            partition_key=request.partition_key, tags=request.tags, raise_on_error=False,
        )


def _failure_message(result) -> str:
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    return failure.step_failure_data.user_failure_data.description


def _storm(storm: Storm, files: dict[str, bytes], backdate: bool) -> None:
    keys = sorted(files)
    now = time.time()
    assert storm.tick() == set()

    # 1. thirty files: written now, copied with a month-old mtime, written then backdated a year
    first = set()
    for i, key in enumerate(keys[:30]):
        old = now - (30 * 86400 if i % 3 == 1 else YEAR)
        first.add(storm.deliver(key, files[key], mtime=old if backdate and i % 3 else None, copy=i % 3 == 1))
    assert storm.tick() == first

    # 2. twenty more, older than anything seen (copy2 of two-year-old files); five of the first
    #    delivered again byte for byte; five rewritten with new bytes and an even older mtime
    second = {storm.deliver(k, files[k], mtime=now - 2 * YEAR if backdate else None, copy=True) for k in keys[30:]}
    for key in keys[:5]:
        storm.deliver(key, files[key], mtime=now - 3 * YEAR if backdate else None, copy=True)
    for key in keys[5:10]:
        files[key] = _changed(files[key])
        second.add(storm.deliver(key, files[key], mtime=now - 3 * YEAR if backdate else None))
    assert storm.tick() == second

    # 3. in flight: one file changes before its run reads it (the run fails, saying so), one changes
    #    while its run is running (it read the old bytes), one run is left alone
    before, during, calm = sorted(p for p in second if p[0] in keys[5:10])[:3]
    third = set()
    files[before[0]] = _changed(files[before[0]])
    third.add(storm.deliver(before[0], files[before[0]], mtime=now - YEAR if backdate else None))
    failed = storm.run(before)
    assert not failed.success
    assert f"changed since version {before[1]} was seen" in _failure_message(failed)
    started = time.time()
    assert storm.run(during).success
    files[during[0]] = _changed(files[during[0]])
    third.add(storm.deliver(during[0], files[during[0]], mtime=started if backdate else None))
    assert storm.run(calm).success
    assert storm.tick() == third
    for pair in third:
        assert storm.run(pair).success

    # 4. one file rewritten twice between ticks (only the last is there to see), one duplicate
    key = keys[40]
    storm.deliver(key, _changed(files[key]))
    files[key] = _changed(_changed(files[key]))
    fourth = {storm.deliver(key, files[key], mtime=now - YEAR if backdate else None)}
    storm.deliver(keys[41], files[keys[41]])
    assert storm.tick() == fourth

    # 5. quiet: nothing new, nothing requested
    assert storm.tick() == set() and storm.tick() == set()

    assert len(storm.requested) == len(set(storm.requested)) == 30 + 25 + 2 + 1
    assert len(set(storm.run_keys)) == len(storm.run_keys)
    # none missed: every file's current version was requested
    assert {(k, storm.version_of(v)) for k, v in files.items()} <= set(storm.requested)


def test_a_storm_on_a_local_landing_zone(tmp_path):
    lake = LakeStorage(url=str(tmp_path / "lake"))
    staging = tmp_path / "producer"
    staging.mkdir()
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        storm = Storm(lake, instance, content_version, staging)
        _storm(storm, _deliveries(), backdate=True)


@pytest.mark.slow
def test_a_storm_on_s3_by_etag(tmp_path, monkeypatch):
    """The same storm on a moto server over HTTP: versions are ETags, runs read with ``IfMatch``."""
    from tests.servers import moto_server

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with moto_server(tmp_path) as endpoint:
        lake = LakeStorage(url="s3://storm/lake", endpoint_url=endpoint, region_name="us-east-1")
        lake.s3_client().create_bucket(Bucket="storm")
        (tmp_path / "dagster").mkdir()
        with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
            storm = Storm(lake, instance, lambda data: hashlib.md5(data).hexdigest())
            _storm(storm, _deliveries(), backdate=False)
