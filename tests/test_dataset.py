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
