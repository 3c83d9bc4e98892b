"""Raw assets materialized by Dagster from a real landing zone into a temp lake, good and bad files alike."""

import io

import dagster as dg
import pandas as pd
import pytest

from assets.ingest import CONTRACT_CHECK, airports, planes, raw_flights, raw_weather
from assets.partitions import daily_partitions
from ml.landing import landing_key
from ml.reference_data import read_table
from pipelines.partition_ranges import range_tags

from tests.conftest import break_wind_readings, resources_for


@dg.asset(partitions_def=daily_partitions, backfill_policy=dg.BackfillPolicy.single_run())
def flights_consumer(context: dg.AssetExecutionContext, raw_flights: pd.DataFrame) -> None:
    """Stands in for features: it must never run on a partition that failed its check."""


def _materialize(storage, assets, first="2013-01-01", last="2013-01-03"):
    return dg.materialize(assets, resources=resources_for(storage), tags=range_tags(first, last), raise_on_error=False)


def _checks(result):
    return {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}


def _parquet(storage, asset, partition):
    return pd.read_parquet(io.BytesIO(storage.read_bytes(f"warehouse/{asset}/{partition}.parquet")))


def test_three_real_days_become_parquet(replayed_lake):
    result = _materialize(replayed_lake, [raw_flights, raw_weather, planes, airports])
    assert result.success
    checks = _checks(result)
    assert all(e.passed for e in checks.values()) and len(checks) == 4
    flights = _parquet(replayed_lake, "raw_flights", "2013-01-02")
    source = read_table("flights")
    expected = source[(source.month == "1") & (source.day == "2")]
    assert len(flights) == len(expected) == 943
    assert flights["flight"].astype(str).tolist() == expected["flight"].tolist()
    assert str(flights["sched_dep_time"].dtype) == "Int16"
    weather = _parquet(replayed_lake, "raw_weather", "2013-01-03")
    assert set(weather["origin"]) == {"EWR", "JFK", "LGA"}
    planes_table = pd.read_parquet(io.BytesIO(replayed_lake.read_bytes("warehouse/planes.parquet")))
    assert len(planes_table) == 3322
    # one step for the whole range: a single-run backfill, not one run per day
    steps = [e for e in result.all_events if e.event_type_value == "STEP_SUCCESS"]
    assert len(steps) == 4


def _edit_day(storage, day, edit) -> None:
    key = landing_key("flights", day)
    frame = pd.read_csv(io.BytesIO(storage.read_bytes(key)), dtype=str, keep_default_na=False)
    storage.write_bytes(key, edit(frame))


def _csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def _truncated(data: bytes) -> bytes:
    """Cut mid-row, as an interrupted upload does."""
    lines = data.split(b"\n")
    return b"\n".join([*lines[:300], b",".join(lines[300].split(b",")[:7])])


def _set(frame, column, value, rows=(3,)):
    frame.loc[list(rows), column] = value
    return frame


BROKEN_FILES = {
    "missing column": (lambda f: _csv(f.drop(columns=["carrier"])), "['carrier'] missing"),
    "renamed column": (lambda f: _csv(f.rename(columns={"dest": "destination"})), "(renamed?)"),
    "text in numeric column": (lambda f: _csv(_set(f, "distance", "n/a km")), "values_parse_as_float64"),
    "empty file": (lambda f: b"", "empty file"),
    "truncated file": (lambda f: _truncated(_csv(f)), "truncated or malformed"),
    "duplicate rows": (lambda f: _csv(pd.concat([f, f.iloc[:3]])), "expect_compound_columns_to_be_unique"),
    "time 2500": (lambda f: _csv(_set(f, "sched_dep_time", "2500")), "expect_column_values_to_be_between"),
}


@pytest.mark.parametrize("case", list(BROKEN_FILES))
def test_broken_landing_file_is_held_back(replayed_lake, case):
    edit, reason = BROKEN_FILES[case]
    # an earlier good run wrote 2013-01-02: a bad rewrite must also remove that stale Parquet
    assert _materialize(replayed_lake, [raw_flights]).success
    _edit_day(replayed_lake, "2013-01-02", edit)

    result = _materialize(replayed_lake, [raw_flights, flights_consumer])

    check = _checks(result)[("raw_flights", CONTRACT_CHECK)]
    assert not check.passed
    failed = check.metadata["failed_partitions"].value
    assert list(failed) == ["2013-01-02"]
    assert any(reason in r for r in failed["2013-01-02"]["reasons"]), failed
    assert "2013-01-02" in check.metadata["bad_rows_sample"].value
    # nothing downstream ran, and no Parquet of that day is left to read
    assert not any(e.step_key == "flights_consumer" for e in result.all_events if e.is_step_success)
    assert not replayed_lake.exists("warehouse/raw_flights/2013-01-02.parquet")
    # the good days of the range were still written; the bad file is kept with its reasons
    assert len(_parquet(replayed_lake, "raw_flights", "2013-01-03")) > 0
    assert replayed_lake.exists("quarantine/flights/2013-01-02/report.json")
    assert replayed_lake.read_bytes("quarantine/flights/2013-01-02/date=2013-01-02.csv") == replayed_lake.read_bytes(
        landing_key("flights", "2013-01-02")
    )


def test_missing_landing_file_is_held_back(lake):
    result = _materialize(lake, [raw_flights], "2013-01-01", "2013-01-01")
    check = _checks(result)[("raw_flights", CONTRACT_CHECK)]
    assert not check.passed and "no such landing file" in check.description


def test_dask_reads_a_range_of_partitions(replayed_lake):
    """The warehouse reader gives a range of stored days as one lazy Dask frame (as training_set reads its window)."""
    from resources.parquet_io import Warehouse

    assert _materialize(replayed_lake, [raw_flights]).success
    days = ["2013-01-01", "2013-01-02", "2013-01-03"]
    frame = Warehouse(replayed_lake).dask_frame("raw_flights", days)
    assert int(frame.shape[0].compute()) == 842 + 943 + 914


def test_a_missing_landing_file_keeps_what_was_ingested(replayed_lake):
    """Landing files expire; re-running a backfill must not wipe the days it can no longer read."""
    assert _materialize(replayed_lake, [raw_flights]).success
    before = _parquet(replayed_lake, "raw_flights", "2013-01-02")
    replayed_lake.delete(landing_key("flights", "2013-01-02"))
    result = _materialize(replayed_lake, [raw_flights])
    check = _checks(result)[("raw_flights", CONTRACT_CHECK)]
    assert not check.passed and "no such landing file" in check.description
    pd.testing.assert_frame_equal(_parquet(replayed_lake, "raw_flights", "2013-01-02"), before)


def test_an_integer_too_large_for_its_column_is_held_back_not_a_crash(replayed_lake):
    _edit_day(replayed_lake, "2013-01-03", lambda f: _csv(_set(f, "dep_time", "40000")))
    result = _materialize(replayed_lake, [raw_flights])
    failed = _checks(result)[("raw_flights", CONTRACT_CHECK)].metadata["failed_partitions"].value
    assert list(failed) == ["2013-01-03"]
    assert "values_parse_as_Int16" in failed["2013-01-03"]["reasons"][0]
    assert replayed_lake.exists("warehouse/raw_flights/2013-01-02.parquet")


def test_one_impossible_reading_of_a_real_day_is_nulled_and_reported(lake):
    """2013-02-12: EWR reports a 1,048 mph wind once. That reading becomes null, the day is ingested."""
    import datetime as dt
    import json

    from pipelines.replay import replay

    day = "2013-02-12"
    replay(lake, dt.date(2013, 2, 12), dt.date(2013, 2, 12))
    result = _materialize(lake, [raw_weather], day, day)
    assert result.success
    check = _checks(result)[("raw_weather", CONTRACT_CHECK)]
    assert check.passed and check.metadata["readings_nulled"].value == 1
    assert "wind_speed" in check.description and "1048.36" in check.description
    weather = _parquet(lake, "raw_weather", day)
    landed = pd.read_csv(io.BytesIO(lake.read_bytes(landing_key("weather", day))))
    assert len(weather) == len(landed) == 72
    faulty = weather["wind_speed"].isna() & landed["wind_speed"].notna().to_numpy()
    assert faulty.sum() == 1
    row = weather[faulty].iloc[0]
    assert row["origin"] == "EWR" and row["time_hour"] == pd.Timestamp("2013-02-12T08:00Z")
    assert row[["temp", "humid", "pressure"]].notna().all(), "the report's other readings are kept"
    report = json.loads(lake.read_bytes(f"quarantine/weather/{day}/nulled_readings.json"))
    (nulled,) = report["nulled"]
    assert nulled["column"] == "wind_speed" and nulled["count"] == 1
    assert nulled["examples"][0]["wind_speed"] == pytest.approx(1048.36058)
    (materialization,) = result.get_asset_materialization_events()
    assert materialization.materialization.metadata["landing/nulled_readings"].value == {"wind_speed": 1}


def test_impossible_readings_above_the_share_limit_hold_the_day_back(lake):
    """4 of a day's 72 reports (over 5 %) with an impossible wind: a broken feed, the whole day is quarantined."""
    import datetime as dt

    from ml.contracts import WEATHER
    from pipelines.replay import replay

    replay(lake, dt.date(2013, 2, 13), dt.date(2013, 2, 13))
    limit = int(WEATHER.max_nulled_share * 72)
    break_wind_readings(lake, "2013-02-13", rows=limit + 1)
    result = _materialize(lake, [raw_weather], "2013-02-13", "2013-02-13")
    assert not result.success
    check = _checks(result)[("raw_weather", CONTRACT_CHECK)]
    assert not check.passed and check.metadata["readings_nulled"].value == 0
    (reason,) = check.metadata["failed_partitions"].value["2013-02-13"]["reasons"]
    assert "wind_speed" in reason and f"{limit + 1} unexpected" in reason
    assert "quarantine/weather/2013-02-13" in check.description
    assert lake.exists("quarantine/weather/2013-02-13/report.json")
    assert not lake.exists("warehouse/raw_weather/2013-02-13.parquet")


def test_readings_at_the_share_limit_are_nulled_and_kept_as_nulls_in_the_raw_table(lake):
    """3 of 72 (the limit) are nulled: the raw table holds them as nulls (what features and their
    null-share check read), beside the day's own missing readings."""
    import datetime as dt

    from ml.contracts import WEATHER
    from pipelines.replay import replay

    replay(lake, dt.date(2013, 2, 13), dt.date(2013, 2, 13))
    limit = int(WEATHER.max_nulled_share * 72)
    before = pd.read_csv(io.BytesIO(lake.read_bytes(landing_key("weather", "2013-02-13"))))["wind_speed"].isna().sum()
    break_wind_readings(lake, "2013-02-13", rows=limit)
    result = _materialize(lake, [raw_weather], "2013-02-13", "2013-02-13")
    assert result.success
    assert _checks(result)[("raw_weather", CONTRACT_CHECK)].metadata["readings_nulled"].value == limit
    assert _parquet(lake, "raw_weather", "2013-02-13")["wind_speed"].isna().sum() == before + limit
