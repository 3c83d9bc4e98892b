"""The training window: time order, split sizes, fingerprint."""

import pandas as pd
import pytest

from ml.dataset import TEST, TRAIN, VALIDATION, WindowSpec, assign_splits, fingerprint, split_days, window_days

DAYS = [f"2013-01-{d:02d}" for d in range(1, 32)]


def test_window_ends_at_the_cutoff():
    assert window_days(DAYS, WindowSpec(window_days=7, cutoff="2013-01-20")) == DAYS[13:20]
    assert window_days(DAYS, WindowSpec(window_days=10))[-1] == "2013-01-31"


def test_split_is_by_time_never_shuffled():
    splits = split_days(DAYS, WindowSpec(validation_days=5, test_days=6))
    order = [splits[d] for d in DAYS]
    assert order == [TRAIN] * 20 + [VALIDATION] * 5 + [TEST] * 6


def test_too_short_a_window_is_a_clear_error():
    with pytest.raises(ValueError, match="too few"):
        split_days(DAYS[:3], WindowSpec(validation_days=2, test_days=2))


def test_cancelled_flights_are_left_out():
    frame = pd.DataFrame({"date": ["2013-01-01"] * 3, "arrived_late": pd.array([1, None, 0], dtype="Int8")})
    out = assign_splits(frame, {"2013-01-01": TRAIN})
    assert len(out) == 2 and set(out["split"]) == {TRAIN}


def test_fingerprint_follows_the_data():
    base = {"2013-01-01": "v1", "2013-01-02": "v1"}
    assert fingerprint(base) == fingerprint(dict(reversed(base.items())))
    assert fingerprint(base) != fingerprint({**base, "2013-01-02": "v2"})


def test_features_are_usable_only_while_their_raw_days_are_unchanged():
    from ml.dataset import unusable_days

    built = {
        "2013-01-01": {"raw_flights": "f1", "raw_weather": "w1"},
        "2013-01-02": {"raw_flights": "f2", "raw_weather": "w2"},
        "2013-01-03": {"raw_flights": "f3", "raw_weather": None},
        "2013-01-04": {"raw_flights": "f4", "raw_weather": "w4"},
        "2013-01-05": None,
    }
    current = {
        "raw_flights": {"2013-01-01": "f1", "2013-01-03": "f3", "2013-01-04": "f4-new", "2013-01-05": "f5", "2013-01-06": "f6"},
        "raw_weather": {"2013-01-01": "w1", "2013-01-02": "w2", "2013-01-03": "w3", "2013-01-04": "w4"},
    }
    days = [f"2013-01-0{d}" for d in range(1, 7)]
    out = unusable_days(days, built, current)
    assert set(out) == set(days[1:])
    assert "raw_flights was held back" in out["2013-01-02"]
    assert "raw_weather arrived after" in out["2013-01-03"]
    assert "raw_flights was rewritten" in out["2013-01-04"]
    assert "record no raw versions" in out["2013-01-05"]
    assert "no flight_features" in out["2013-01-06"]
