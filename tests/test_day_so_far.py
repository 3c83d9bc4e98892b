"""The day so far at each flight's cutoff: hand-made days with known answers, and a replayed real day online = offline."""

import math

import numpy as np
import pandas as pd
import pytest

from ml.contracts import AIRPORTS, FLIGHTS, PLANES, WEATHER
from ml.day_so_far import (
    CUTOFF_MARGIN_MINUTES,
    DAY_SO_FAR_FEATURES,
    DaySoFar,
    ScheduledFlight,
    actual_minutes,
    day_so_far_features,
    scheduled_minutes,
)
from ml.features import build_features
from ml.parsing import parse_frame
from ml.reference_data import read_table


def _flights(rows):
    """Raw-flight columns the day so far reads, from ``(hhmm local EST, dep_delay, origin, carrier, tailnum, flight)``."""
    frame = pd.DataFrame(rows, columns=["hhmm", "dep_delay", "origin", "carrier", "tailnum", "flight"])
    local = pd.Timestamp("2013-01-15") + pd.to_timedelta(frame.hhmm // 100 * 60 + frame.hhmm % 100, unit="min")
    utc = (local + pd.Timedelta(hours=5)).dt.tz_localize("UTC")
    return frame.assign(
        year=2013, month=1, day=15, time_hour=utc.dt.floor("h"), minute=(frame.hhmm % 100),
        dep_delay=frame.dep_delay.astype("float64"), tailnum=frame.tailnum.astype("string"),
    )


def test_recent_departures_count_only_those_that_left_before_the_cutoff():
    flights = _flights([
        (800, 0, "EWR", "UA", None, 1),     # left 08:00
        (830, 40, "EWR", "UA", None, 2),    # left 09:10
        (900, 14, "EWR", "AA", None, 3),    # left 09:14: on the target's cutoff, not before it
        (900, None, "EWR", "AA", None, 4),  # cancelled: overdue all day
        (700, 0, "JFK", "UA", None, 5),     # another origin
        (929, 0, "EWR", "UA", None, 6),     # target: cutoff 09:14
    ])
    row = day_so_far_features(flights, np.full(len(flights), 100.0)).iloc[5]
    assert row.origin_recent_departures == 2 and row.origin_recent_mean_delay == 20
    assert row.origin_recent_p90_delay == pytest.approx(36.0)  # between 0 and 40, at 0.9
    assert row.origin_today_departures == 2
    # flights 3 and 4 were due at 09:00 and had not left by 09:14
    assert row.origin_overdue == 2 and row.origin_overdue_mean_minutes == 14
    assert row.carrier_origin_recent_departures == 2 and row.carrier_origin_overdue == 0


def test_a_flight_that_left_early_never_counts_its_own_departure():
    """B6 271 of 2013-11-03 left 20 minutes early, before its own cutoff: it is not one of the origin's departures."""
    flights = _flights([
        (800, 0, "LGA", "B6", None, 1),     # left 08:00
        (830, -20, "LGA", "B6", None, 2),   # target: left 08:10, before its cutoff 08:15
        (900, -20, "LGA", "B6", None, 3),   # left 08:40: after the target's cutoff
    ])
    out = day_so_far_features(flights, np.full(len(flights), 100.0))
    row = out.iloc[1]
    assert row.origin_recent_departures == 1 and row.origin_recent_mean_delay == 0 and row.origin_recent_p90_delay == 0
    assert row.origin_today_departures == 1 and row.origin_today_mean_delay == 0
    assert row.carrier_origin_recent_departures == 1 and row.carrier_origin_recent_p90_delay == 0
    # the third flight (cutoff 08:45) sees both earlier departures, and not its own (08:40)
    assert out.iloc[2].origin_recent_departures == 2 and out.iloc[2].origin_recent_mean_delay == -10
    live = DaySoFar()
    for i, (hhmm, delay) in enumerate([(800, 0), (830, -20), (900, -20)]):
        live.schedule(ScheduledFlight(i, "LGA", "B6", None, int(scheduled_minutes(flights)[i]), i + 1, 100.0))
        live.departed(i, delay)
    for i in range(3):
        assert pd.Series(live.features(i)).equals(out.iloc[i][list(DAY_SO_FAR_FEATURES)].astype("float64"))


def test_a_departure_after_midnight_is_not_one_that_already_left():
    """22:30 delayed 120 min leaves at 00:30 (hhmm 30): at 23:44 it is overdue by 74 minutes, not departed."""
    flights = _flights([(2230, 120, "LGA", "DL", None, 1), (2359, 0, "LGA", "DL", None, 2)])
    row = day_so_far_features(flights, np.full(2, 100.0)).iloc[1]
    assert row.origin_today_departures == 0 and math.isnan(row.origin_recent_mean_delay)
    assert row.origin_overdue == 1 and row.origin_overdue_mean_minutes == 74


def test_the_aircraft_earlier_today():
    flights = _flights([
        (600, 30, "EWR", "UA", "N1", 1),    # left 06:30; 90-minute block each way
        (1100, 0, "EWR", "UA", "N1", 2),    # 5 h later: propagated 30 − (300 − 180) = −90
        (1200, 0, "JFK", "B6", "N2", 3),    # not left by 13:45
        (1400, 0, "JFK", "B6", "N2", 4),
        (1400, 0, "JFK", "B6", None, 5),    # unknown tail
    ])
    out = day_so_far_features(flights, np.full(len(flights), 90.0))
    assert (out.loc[1, "plane_legs_before"], out.loc[1, "plane_prev_dep_delay"]) == (1, 30)
    assert (out.loc[1, "plane_sched_gap_minutes"], out.loc[1, "plane_propagated_delay"]) == (300, -90)
    assert out.loc[0, "plane_legs_before"] == 0 and math.isnan(out.loc[0, "plane_prev_dep_delay"])
    # N2's 12:00 leg left at 12:00: known at 13:45
    assert out.loc[3, "plane_prev_dep_delay"] == 0
    late = flights.assign(dep_delay=flights.dep_delay.where(flights.flight != 3, 200.0))
    row = day_so_far_features(late, np.full(len(flights), 90.0)).loc[3]
    assert math.isnan(row.plane_prev_dep_delay) and row.plane_prev_overdue_minutes == 105  # 13:45 − 12:00
    assert out.loc[4, list(("plane_legs_before", "plane_prev_dep_delay"))].isna().all()


@pytest.fixture(scope="module")
def jan10():
    def day(table, contract):
        raw = read_table(table)
        return parse_frame(raw[(raw.month == "1") & (raw.day == "10")].reset_index(drop=True), contract, table).frame

    planes = parse_frame(read_table("planes"), PLANES, "planes").frame
    airports = parse_frame(read_table("airports"), AIRPORTS, "airports").frame
    return day("flights", FLIGHTS), day("weather", WEATHER), planes, airports


def test_replaying_a_day_online_gives_the_offline_features(jan10):
    """Schedule the day, feed departures in time order, ask each flight at its cutoff: the batch features, exactly."""
    flights, weather, planes, airports = jan10
    offline = build_features(flights, weather, planes, airports)
    scheduled, actual = scheduled_minutes(flights), actual_minutes(flights)
    live = DaySoFar()
    for i, row in flights.iterrows():
        live.schedule(ScheduledFlight(
            key=i, origin=row.origin, carrier=row.carrier, tailnum=None if pd.isna(row.tailnum) else row.tailnum,
            scheduled=int(scheduled[i]), flight=int(row.flight), block_minutes=float(offline.scheduled_block_minutes[i]),
        ))
    departures = sorted((actual[i], i) for i in flights.index if not np.isnan(actual[i]))
    fed = 0
    online = {}
    for i in np.argsort(scheduled, kind="stable"):
        cutoff = scheduled[i] - CUTOFF_MARGIN_MINUTES
        while fed < len(departures) and departures[fed][0] < cutoff:
            live.departed(departures[fed][1], int(flights.dep_delay[departures[fed][1]]))
            fed += 1
        online[i] = live.features(i)
    online = pd.DataFrame.from_dict(online, orient="index").sort_index()
    assert len(online) == len(flights) > 800
    pd.testing.assert_frame_equal(online[list(DAY_SO_FAR_FEATURES)], offline[list(DAY_SO_FAR_FEATURES)], check_exact=True)


def test_a_feed_that_runs_ahead_changes_nothing(jan10):
    """Departures fed before they happen (a whole day at once) are ignored until they have happened."""
    flights, weather, planes, airports = jan10
    offline = build_features(flights, weather, planes, airports)
    live = DaySoFar()
    scheduled = scheduled_minutes(flights)
    for i, row in flights.iterrows():
        live.schedule(ScheduledFlight(i, row.origin, row.carrier, None if pd.isna(row.tailnum) else row.tailnum,
                                      int(scheduled[i]), int(row.flight), float(offline.scheduled_block_minutes[i])))
    for i in flights.index[flights.dep_delay.notna()]:
        live.departed(i, int(flights.dep_delay[i]))
    for i in flights.index[::97]:
        assert pd.Series(live.features(i)).equals(offline.loc[i, list(DAY_SO_FAR_FEATURES)].astype("float64"))


def test_late_history_is_folded_day_by_day_from_previous_days_only():
    """The state of a day holds the 28 days before it, never the day itself; folding equals counting afresh."""
    from ml.history import HISTORY_DAYS, advance, day_counts, history_features, history_states

    raw = read_table("flights")
    raw = raw[(raw.month == "2") | ((raw.month == "1") & (raw.day.astype(int) >= 20))].reset_index(drop=True)
    flights = parse_frame(raw, FLIGHTS, "flights").frame
    day = flights["year"].astype(str) + "-" + flights["month"].astype(str).str.zfill(2) + "-" + flights["day"].astype(str).str.zfill(2)
    by_day = {d: rows for d, rows in flights.groupby(day, sort=True)}
    days = sorted(by_day)
    airports = parse_frame(read_table("airports"), AIRPORTS, "airports").frame
    states = history_states(days, by_day, airports)
    target = "2013-02-25"
    window = [d for d in days if "2013-01-28" <= d < target]
    assert len(window) == HISTORY_DAYS and sorted(states[target]["day"].unique()) == window
    afresh = pd.concat([day_counts(by_day[d], d, airports) for d in window], ignore_index=True)
    pd.testing.assert_frame_equal(states[target].reset_index(drop=True), afresh)
    # a later day or the day itself changes nothing; one state and the previous flights advance it
    scrambled = {**by_day, target: by_day[target].assign(arr_delay=999.0)}
    pd.testing.assert_frame_equal(history_states(days, scrambled, airports)[target], states[target])
    nxt = "2013-02-26"
    pd.testing.assert_frame_equal(advance(states[target], target, by_day[target], airports).reset_index(drop=True),
                                  states[nxt].reset_index(drop=True))
    rows = pd.DataFrame({"date": [target, target, "2013-01-20"], "origin": ["JFK", "JFK", "JFK"],
                         "dest": ["LAX", "ZZZ", "LAX"], "carrier": ["AA", "AA", "AA"]})
    out = history_features(rows, states, np.full(len(rows), 10**9))  # cutoffs after every arrival
    jfk_lax = afresh[(afresh.kind == "route") & (afresh.key == "JFK-LAX")]
    assert out.loc[0, "route_flights_28d"] == jfk_lax.flights.sum() > 100
    assert 0 < out.loc[1, "route_late_rate_28d"] < 1 and out.loc[1, "route_flights_28d"] == 0  # unknown route: the prior
    assert out.loc[2].isna().all()  # the first day has no earlier days
