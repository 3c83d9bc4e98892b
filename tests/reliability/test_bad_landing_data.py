"""A bad landing data set, ingested and featurised by Dagster on a real slice of 2013.

Each day of 2013-01-01..10 gets one fault (or none). A bad day is held back with a reason that names
the column and the file, and nothing downstream exists for it; a day from an ordinary tool (a BOM,
an extra column) is ingested, and the extra column is recorded where people look.
"""

import datetime as dt
import gzip
import io

import dagster as dg
import pandas as pd
import pytest

from assets.features import flight_features
from assets.ingest import CONTRACT_CHECK, airports, planes, raw_flights, raw_weather
from ml.landing import landing_key
from pipelines.partition_ranges import range_tags
from pipelines.replay import replay
from resources.storage import LakeStorage
from tests.conftest import chain_resources, resources_for

FIRST, LAST = "2013-01-01", "2013-01-10"


def _csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def _set(column, value, rows=(3,)):
    def edit(frame):
        frame.loc[rows if isinstance(rows, slice) else list(rows), column] = value
        return _csv(frame)

    return edit


# day → (fault, rewrite of the day's flights file, what the reason must say, the column it must name)
HELD_BACK = {
    "2013-01-02": ("renamed column", lambda f: _csv(f.rename(columns={"dest": "destination"})), "(renamed?)", "destination"),
    "2013-01-03": ("text in a number", _set("distance", "n/a km"), "values_parse_as_float64", "distance"),
    "2013-01-04": ("NaN in a key", _set("carrier", "NaN"), "expect_column_values_to_not_be_null", "carrier"),
    "2013-01-05": ("inf", _set("dep_delay", "inf"), "values_parse_as_float64", "dep_delay"),
    "2013-01-06": ("empty file", lambda f: b"", "empty file", None),
    "2013-01-07": ("all-null column", _set("air_time", "", rows=slice(None)), "column_not_entirely_null", "air_time"),
    "2013-01-08": ("gzip", lambda f: gzip.compress(_csv(f)), "gzip-compressed", None),
}
INGESTED = {
    "2013-01-09": ("BOM and CRLF (Excel)", lambda f: b"\xef\xbb\xbf" + _csv(f).replace(b"\n", b"\r\n")),
    "2013-01-10": ("extra column", lambda f: _csv(f.assign(gate="B22"))),
}


def _rewrite(storage: LakeStorage, day: str, edit) -> None:
    key = landing_key("flights", day)
    frame = pd.read_csv(io.BytesIO(storage.read_bytes(key)), dtype=str, keep_default_na=False)
    storage.write_bytes(key, edit(frame))


@pytest.fixture(scope="module")
def bad_lake(tmp_path_factory):
    """Ten real days, seven of them broken, ingested then featurised as two single-run backfills."""
    lake = LakeStorage(url=str(tmp_path_factory.mktemp("bad-landing") / "lake"))
    replay(lake, dt.date.fromisoformat(FIRST), dt.date.fromisoformat(LAST))
    clean = {day: lake.read_bytes(landing_key("flights", day)) for day in INGESTED}
    for day, (_, edit, *_) in {**HELD_BACK, **INGESTED}.items():
        _rewrite(lake, day, edit)
    instance = dg.DagsterInstance.ephemeral()
    ingest = dg.materialize(
        [raw_flights, raw_weather, planes, airports], resources=resources_for(lake),
        tags=range_tags(FIRST, LAST), instance=instance, raise_on_error=False,
    )
    resources = {k: v for k, v in chain_resources(lake, None).items() if v is not None}
    features = dg.materialize(
        [flight_features, raw_flights.to_source_asset(), raw_weather.to_source_asset(), planes.to_source_asset(),
         airports.to_source_asset()],
        resources=resources, tags=range_tags(FIRST, LAST), instance=instance, selection=[flight_features],
        raise_on_error=False,
    )
    return lake, ingest, features, clean


def _flights_check(result) -> dg.AssetCheckEvaluation:
    (check,) = [
        e for e in result.get_asset_check_evaluations()
        if e.asset_key == dg.AssetKey("raw_flights") and e.check_name == CONTRACT_CHECK
    ]
    return check


@pytest.mark.parametrize("day", list(HELD_BACK), ids=[v[0] for v in HELD_BACK.values()])
def test_a_bad_day_is_held_back_with_a_reason_naming_column_and_file(bad_lake, day):
    lake, ingest, features, _ = bad_lake
    _, _, reason, column = HELD_BACK[day]
    failed = _flights_check(ingest).metadata["failed_partitions"].value
    assert failed[day]["file"].endswith(f"landing/flights/date={day}.csv")
    assert any(reason in r and (column is None or column in r) for r in failed[day]["reasons"]), failed[day]
    assert lake.exists(f"quarantine/flights/{day}/report.json")
    # nothing downstream: no raw Parquet, no features for the day
    assert not lake.exists(f"warehouse/raw_flights/{day}.parquet")
    assert not lake.exists(f"warehouse/flight_features/{day}.parquet")


def test_only_the_bad_days_are_held_back(bad_lake):
    _, ingest, features, _ = bad_lake
    check = _flights_check(ingest)
    assert not check.passed
    assert set(check.metadata["failed_partitions"].value) == set(HELD_BACK)
    assert {e.asset_key.to_user_string(): e.passed for e in ingest.get_asset_check_evaluations()
            if e.asset_key != dg.AssetKey("raw_flights")} == {"raw_weather": True, "planes": True, "airports": True}


@pytest.mark.parametrize("day", list(INGESTED), ids=[v[0] for v in INGESTED.values()])
def test_files_from_ordinary_tools_are_ingested_and_featurised(bad_lake, day):
    lake, _, features, clean = bad_lake
    stored = pd.read_parquet(io.BytesIO(lake.read_bytes(f"warehouse/raw_flights/{day}.parquet")))
    source = pd.read_csv(io.BytesIO(clean[day]), dtype=str, keep_default_na=False)
    assert len(stored) == len(source) and list(stored.columns) == list(source.columns)
    assert stored["carrier"].tolist() == source["carrier"].tolist()
    assert lake.exists(f"warehouse/flight_features/{day}.parquet")


def test_an_extra_column_is_recorded_in_the_materialization(bad_lake):
    _, ingest, _, _ = bad_lake
    by_day = {m.partition: m.metadata for m in ingest.asset_materializations_for_node("raw_flights")}
    assert by_day["2013-01-10"]["landing/extra_columns"].value == ["gate"]
    assert "landing/extra_columns" not in by_day["2013-01-09"]
    assert by_day["2013-01-09"]["landing/key"].value == "landing/flights/date=2013-01-09.csv"
    assert by_day["2013-01-09"]["landing/version"].value


def test_the_strict_setting_holds_an_extra_column_back(bad_lake):
    lake, *_ = bad_lake
    result = dg.materialize(
        [raw_flights], resources=resources_for(lake), partition_key="2013-01-10", raise_on_error=False,
        run_config={"ops": {"raw_flights": {"config": {"reject_extra_columns": True}}}},
        instance=dg.DagsterInstance.ephemeral(),
    )
    failed = _flights_check(result).metadata["failed_partitions"].value
    assert "unexpected column(s) ['gate']" in failed["2013-01-10"]["reasons"][0]
    assert "date=2013-01-10.csv" in failed["2013-01-10"]["reasons"][0]
