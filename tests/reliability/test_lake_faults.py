"""Faults in the lake, injected for real: SIGKILLed runs, stale features, shared windows, failed S3 writes.

Runs happen in a child process (`_lake_child.py`) that pauses inside a write and is killed with
SIGKILL, or in process on small real slices of 2013. What must hold: nothing half-written is ever
visible to readers, a rerun gives the undisturbed result, training never sees features of a raw
day that was held back, and each training run trains on its own window.
"""

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from assets.features import flight_features
from assets.ingest import airports, planes, raw_flights, raw_weather
from assets.training import delay_model, training_set
from pipelines.partition_ranges import range_tags
from pipelines.replay import replay
from resources import io_managers
from resources.parquet_io import FOOTER_ATTR, Warehouse
from resources.storage import LakeStorage
from tests.conftest import chain_resources

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
DAYS = [f"2013-01-0{d}" for d in range(1, 6)]
RAW = [raw_flights, raw_weather, planes, airports]
WINDOW = {"validation_days": 1, "test_days": 1}
SIGNAL_WAIT_S = 180  # only a guard against a hung child; nothing is asserted on time


def _resources(lake: LakeStorage, **io) -> dict:
    resources = {k: v for k, v in chain_resources(lake, None).items() if v is not None}
    resources.update(io_managers(lake, **io))
    return resources


def _training_set(lake, instance=None, **window):
    return dg.materialize(
        [flight_features.to_source_asset(), training_set], resources=_resources(lake), instance=instance,
        selection=[training_set], run_config={"ops": {"training_set": {"config": {**WINDOW, **window}}}},
    )


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> LakeStorage:
    """Five real days ingested and featurised without any fault: what every rerun must reproduce."""
    lake = LakeStorage(url=str(tmp_path_factory.mktemp("baseline") / "lake"))
    replay(lake, dt.date(2013, 1, 1), dt.date(2013, 1, 5))
    tags = range_tags(DAYS[0], DAYS[-1])
    assert dg.materialize(RAW, resources=_resources(lake), tags=tags).success
    assert dg.materialize([flight_features], resources=_resources(lake), tags=tags).success
    return lake


def _copy(baseline: LakeStorage, tmp_path: Path, *parts: str) -> LakeStorage:
    """A new lake holding ``parts`` of the baseline (modification times kept, so stored versions match)."""
    lake = LakeStorage(url=str(tmp_path / "lake"))
    for part in parts:
        shutil.copytree(Path(baseline.url) / part, Path(lake.url) / part, copy_function=shutil.copy2)
    return lake


def _files(lake: LakeStorage, prefix: str) -> dict[str, bytes]:
    """Every file on disk under ``prefix``, hidden temporaries included."""
    root = Path(lake.url)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted((root / prefix).rglob("*")) if p.is_file()}


def _start_child(tmp_path: Path, spec: dict) -> tuple[subprocess.Popen, Path]:
    spec = {"signal": str(tmp_path / "child.signal"), **spec}
    spec_path = tmp_path / "child.json"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = open(tmp_path / "child.log", "wb")
    child = subprocess.Popen([sys.executable, "-m", "tests.reliability._lake_child", str(spec_path)],
                             cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    return child, Path(spec["signal"])


def _await_signal(child: subprocess.Popen, flag: Path, tmp_path: Path) -> dict:
    deadline = time.monotonic() + SIGNAL_WAIT_S
    while not flag.exists():
        if child.poll() is not None or time.monotonic() > deadline:
            child.kill()
            pytest.fail("child never reached its fault:\n" + (tmp_path / "child.log").read_text()[-4000:])
        time.sleep(0.05)
    return json.loads(flag.read_text())


def _kill_9(child: subprocess.Popen) -> None:
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL


def _assert_readers_see_only_whole_files(lake: LakeStorage, baseline: LakeStorage, asset: str) -> None:
    """Whatever a lister or reader finds is a complete Parquet file equal to the undisturbed run's."""
    import pyarrow.parquet as pq

    listed = lake.list("warehouse/")
    assert listed, "the killed run should have finished at least one file"
    for stored in listed:
        assert stored.key.endswith(".parquet") and not stored.key.rsplit("/", 1)[-1].startswith("."), stored.key
        pq.read_table(lake.uri(stored.key))  # whole: footer and every row group readable
    for day in DAYS:
        frame = Warehouse(lake).frame(asset, day)
        if frame is not None:
            pd.testing.assert_frame_equal(frame, Warehouse(baseline).frame(asset, day))
    assert set(Warehouse(lake).partitions(asset)) <= set(DAYS)


def test_kill_9_mid_ingest_leaves_no_partial_file_and_the_rerun_matches(baseline, tmp_path):
    lake = _copy(baseline, tmp_path, "landing")
    child, flag = _start_child(tmp_path, {
        "lake": lake.url, "assets": ["raw_flights", "raw_weather"], "range": [DAYS[0], DAYS[-1]],
        "fault": {"kind": "serialize", "at": 2},  # half of raw_flights 2013-01-02 written, then killed
    })
    _await_signal(child, flag, tmp_path)
    _kill_9(child)

    _assert_readers_see_only_whole_files(lake, baseline, "raw_flights")
    assert Warehouse(lake).frame("raw_flights", DAYS[1]) is None

    rerun = dg.materialize([raw_flights, raw_weather], resources=_resources(lake), tags=range_tags(DAYS[0], DAYS[-1]))
    assert rerun.success
    for asset in ("raw_flights", "raw_weather"):
        assert _files(lake, f"warehouse/{asset}") == _files(baseline, f"warehouse/{asset}")  # same bytes, no leftovers


def test_kill_9_mid_features_leaves_no_partial_file_and_training_skips_what_is_missing(baseline, tmp_path):
    lake = _copy(baseline, tmp_path, "landing", "warehouse")
    shutil.rmtree(Path(lake.url) / "warehouse" / "flight_features")
    child, flag = _start_child(tmp_path, {
        "lake": lake.url, "assets": ["flight_features"], "sources": ["raw_flights", "raw_weather", "planes", "airports"],
        "range": [DAYS[0], DAYS[-1]],
        "fault": {"kind": "rename", "at": 4},  # 2013-01-04 fully written aside, killed before the rename
    })
    info = _await_signal(child, flag, tmp_path)
    _kill_9(child)
    assert info["target"].endswith(f"{DAYS[3]}.parquet") and Path(info["source"]).exists()

    _assert_readers_see_only_whole_files(lake, baseline, "flight_features")
    assert sorted(Warehouse(lake).partitions("flight_features")) == DAYS[:3]

    window = _training_set(lake)
    metadata = window.get_asset_materialization_events()[0].materialization.metadata
    assert set(metadata["days_excluded"].value) == {DAYS[3], DAYS[4]}
    frame = Warehouse(lake).run_output("training_set", window.run_id)
    assert sorted(frame["date"].unique()) == DAYS[:3]

    rerun = dg.materialize([flight_features], resources=_resources(lake), tags=range_tags(DAYS[0], DAYS[-1]))
    assert rerun.success
    for day in DAYS:
        pd.testing.assert_frame_equal(Warehouse(lake).frame("flight_features", day),
                                      Warehouse(baseline).frame("flight_features", day))
    assert sorted(_files(lake, "warehouse/flight_features")) == [f"warehouse/flight_features/{d}.parquet" for d in DAYS]
    # each day's materialization and file name the raw versions of that day only, not the whole range's
    for event in rerun.get_asset_materialization_events():
        day = event.materialization.partition
        lineage = event.materialization.metadata["built_from"].value
        assert set(lineage) == {"raw_flights", "raw_weather"}
        assert Warehouse(lake).frame("flight_features", day).attrs[FOOTER_ATTR]["built_from"] == lineage


def test_a_held_back_raw_day_never_reaches_the_training_set(baseline, tmp_path):
    """Defect 2: features of a day whose raw flights or weather were held back later are stale, never trained on."""
    lake = _copy(baseline, tmp_path, "landing", "warehouse")
    lake.write_bytes(f"landing/flights/date={DAYS[2]}.csv", b"year,month\n2013,1\n")
    lake.write_bytes(f"landing/weather/date={DAYS[3]}.csv", b"year,month\n2013,1\n")
    for asset, day in ((raw_flights, DAYS[2]), (raw_weather, DAYS[3])):
        held = dg.materialize([asset], resources=_resources(lake), partition_key=day, raise_on_error=False)
        assert not held.get_asset_check_evaluations()[0].passed
    assert Warehouse(lake).frame("raw_flights", DAYS[2]) is None
    assert {DAYS[2], DAYS[3]} <= set(Warehouse(lake).partitions("flight_features"))  # older features still stored

    result = _training_set(lake)
    frame = Warehouse(lake).run_output("training_set", result.run_id)
    assert sorted(frame["date"].unique()) == [DAYS[0], DAYS[1], DAYS[4]]
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["days"].value == 3
    excluded = metadata["days_excluded"].value
    assert set(excluded) == {DAYS[2], DAYS[3]}
    assert "raw_flights was held back" in excluded[DAYS[2]] and "raw_weather was held back" in excluded[DAYS[3]]


def test_features_that_fail_their_checks_remove_the_older_files_of_their_days(baseline, tmp_path):
    """Defect 2: a rebuild that fails its blocking checks leaves its days without features, not with old ones."""
    import io

    lake = _copy(baseline, tmp_path, "landing", "warehouse")
    key = f"warehouse/raw_flights/{DAYS[1]}.parquet"
    day = pd.read_parquet(io.BytesIO(lake.read_bytes(key)))
    buffer = io.BytesIO()
    pd.concat([day, day.head(3)], ignore_index=True).to_parquet(buffer, index=False)
    lake.write_bytes(key, buffer.getvalue())  # an upstream fault no raw check catches: duplicated flights

    result = dg.materialize([flight_features], resources=_resources(lake), tags=range_tags(DAYS[0], DAYS[2]),
                            raise_on_error=False)
    assert not all(e.passed for e in result.get_asset_check_evaluations())
    assert sorted(Warehouse(lake).partitions("flight_features")) == DAYS[3:]


def _dagster_home(tmp_path: Path) -> str:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return str(home)


def test_two_trainings_each_train_on_their_own_window(baseline, tmp_path):
    """Defect 4: run A's delay_model waits while run B writes its window; A still trains on A's."""
    lake = _copy(baseline, tmp_path, "landing", "warehouse")
    home = _dagster_home(tmp_path)
    go = tmp_path / "go"
    recorded = tmp_path / "window.json"
    child, flag = _start_child(tmp_path, {
        "lake": lake.url, "dagster_home": home, "assets": ["training_set", "delay_model"], "sources": ["flight_features"],
        "run_config": {"ops": {"training_set": {"config": WINDOW}}},
        "fault": {"kind": "pause_before_load", "asset": "training_set"}, "go": str(go), "record_window": str(recorded),
    })
    run_a = _await_signal(child, flag, tmp_path)["run_id"]

    other = _training_set(lake, dg.DagsterInstance.from_config(home), cutoff=DAYS[3])  # run B: a shorter window
    assert other.success
    go.touch()
    assert child.wait(timeout=SIGNAL_WAIT_S) == 0, (tmp_path / "child.log").read_text()[-4000:]

    window = json.loads(recorded.read_text())
    assert window["run_id"] == run_a and window["days"] == DAYS
    assert sorted(Warehouse(lake).run_output("training_set", other.run_id)["date"].unique()) == DAYS[:4]


def test_a_window_that_is_not_the_runs_own_fails_clearly_and_old_windows_are_pruned(baseline, tmp_path, monkeypatch):
    """Defect 4: delay_model refuses a window whose run or fingerprint differs; only the newest windows are kept."""
    import assets.training as training_assets
    from resources.compute import TorchCompute
    from resources.mlflow_registry import MlflowRegistry

    lake = _copy(baseline, tmp_path, "landing", "warehouse")
    instance = dg.DagsterInstance.ephemeral()
    resources = {**_resources(lake, keep_run_outputs=2),
                 "registry": MlflowRegistry(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"),
                 "compute": TorchCompute(device="cpu")}
    runs = []
    for cutoff in (DAYS[4], DAYS[3], DAYS[4]):
        result = dg.materialize([flight_features.to_source_asset(), training_set], resources=resources,
                                instance=instance, selection=[training_set],
                                run_config={"ops": {"training_set": {"config": {**WINDOW, "cutoff": cutoff}}}})
        runs.append(result.run_id)
    assert {o.key for o in lake.list("warehouse/training_set/")} == {f"warehouse/training_set/{r}.parquet" for r in runs[1:]}
    assert Warehouse(lake).run_output("training_set").attrs["lake"]["run_id"] == runs[2]

    # the newest run's window replaced by another run's, as a shared file or a careless restore would
    lake.write_bytes(f"warehouse/training_set/{runs[2]}.parquet", lake.read_bytes(f"warehouse/training_set/{runs[1]}.parquet"))
    trained = []
    monkeypatch.setattr(training_assets, "evaluate_and_register", lambda *args: trained.append(args))
    result = dg.materialize([flight_features.to_source_asset(), training_set, delay_model], resources=resources,
                            instance=instance, selection=[delay_model], raise_on_error=False)
    assert not result.success and not trained
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.user_failure_data.description
    assert f"run {runs[1]}" in message and f"materialized by run {runs[2]}" in message


BUCKET = "lake-faults"


def _s3_lake(endpoint: str, bucket: str, prefix: str, versioning: bool = False) -> LakeStorage:
    storage = LakeStorage(url=f"s3://{bucket}/{prefix}", endpoint_url=endpoint, region_name="us-east-1")
    client = storage.s3_client()
    client.create_bucket(Bucket=bucket)
    if versioning:
        client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return storage


def test_an_exception_mid_write_on_s3_leaves_the_previous_object_or_none(s3_endpoint, monkeypatch):
    """Defect 8: a write that fails half-way must not commit a truncated Parquet."""
    import pyarrow.parquet as pq

    lake = _s3_lake(s3_endpoint, BUCKET, "truncated")
    replay(lake, dt.date(2013, 1, 1), dt.date(2013, 1, 2), datasets=("flights",), with_reference=False)
    assert dg.materialize([raw_flights], resources=_resources(lake), partition_key=DAYS[0]).success
    before = lake.read_bytes(f"warehouse/raw_flights/{DAYS[0]}.parquet")

    original = pq.write_table

    def half_then_fail(table, where, *args, **kwargs):
        import io

        buffer = io.BytesIO()
        original(table, buffer, *args, **kwargs)
        if hasattr(where, "write"):
            where.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise OSError("injected: the writer died half-way")

    monkeypatch.setattr(pq, "write_table", half_then_fail)
    result = dg.materialize([raw_flights], resources=_resources(lake), tags=range_tags(DAYS[0], DAYS[1]),
                            raise_on_error=False)
    assert not result.success
    monkeypatch.undo()
    assert lake.read_bytes(f"warehouse/raw_flights/{DAYS[0]}.parquet") == before
    assert not lake.exists(f"warehouse/raw_flights/{DAYS[1]}.parquet")


def test_writes_report_bucket_versioning_asked_once_per_run(s3_endpoint, monkeypatch):
    """Defect 8: whether the bucket keeps old versions is in the metadata, from one call, not one per partition."""
    import botocore.client

    calls = []
    original = botocore.client.BaseClient._make_api_call

    def counting(self, operation, params):
        if operation == "GetBucketVersioning":
            calls.append(params["Bucket"])
        return original(self, operation, params)

    lake = _s3_lake(s3_endpoint, "lake-versioned", "lake", versioning=True)
    replay(lake, dt.date(2013, 1, 1), dt.date(2013, 1, 3), with_reference=False)
    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", counting)
    result = dg.materialize([raw_flights, raw_weather], resources=_resources(lake), tags=range_tags(DAYS[0], DAYS[2]))
    assert result.success
    reported = {e.asset_key.to_user_string(): e.materialization.metadata["bucket_versioning"].value
                for e in result.get_asset_materialization_events()}
    assert reported == {"raw_flights": "Enabled", "raw_weather": "Enabled"}
    assert calls == ["lake-versioned"]
