"""The retraining policy (ml/retraining_policy.py) as a pure function: loop state in, decision and reason out."""

import pytest

from ml.retraining_policy import (
    DRIFT, PERFORMANCE, LoopState, PolicySettings, backoff_warning, decide, new_labelled_days, required_new_days,
)

SETTINGS = PolicySettings(cooldown_s=3600, drift_min_new_days=7, performance_min_new_days=1, max_new_days=56,
                          warn_after_rejections=2)
NOW = 1_000_000.0
SUMMER = tuple(f"2013-06-{d:02d}" for d in range(20, 31))  # 11 days
WINTER = tuple(f"2013-03-{d:02d}" for d in range(1, 32))


def _state(trigger=DRIFT, days=SUMMER[:3], rejections=0, last_start=NOW - 7200, window="2013-03-31"):
    return LoopState(trigger=trigger, now_s=NOW, last_training_start_s=last_start, window_last_day=window,
                     labelled_days=WINTER + days, rejections=rejections)


def test_drift_alone_waits_for_enough_new_labelled_days():
    early = decide(_state(days=SUMMER[:3]), SETTINGS)
    assert not early.retrain and (early.new_days, early.required_new_days) == (3, 7)
    assert "drift seen, retraining cannot help yet: 3 of 7 labelled day(s) since the last window ended 2013-03-31" in early.reason

    ready = decide(_state(days=SUMMER[:7]), SETTINGS)
    assert ready.retrain and ready.new_days == 7


def test_a_failed_performance_check_retrains_on_any_new_labelled_day():
    assert decide(_state(trigger=PERFORMANCE, days=SUMMER[:1]), SETTINGS).retrain
    stale = decide(_state(trigger=PERFORMANCE, days=()), SETTINGS)
    assert not stale.retrain and "needs new labels" in stale.reason and stale.new_days == 0


def test_cooldown_holds_whatever_the_trigger_and_the_data():
    for trigger in (PERFORMANCE, DRIFT):
        held = decide(_state(trigger=trigger, days=SUMMER, last_start=NOW - 60), SETTINGS)
        assert not held.retrain and "within the 3600 s cooldown (60 s since" in held.reason


def test_no_training_yet_retrains_on_the_first_failed_check():
    first = decide(LoopState(trigger=DRIFT, now_s=NOW, labelled_days=WINTER), SETTINGS)
    assert first.retrain and "no window yet" in first.reason


def test_rejections_double_the_wait_up_to_the_cap():
    assert [required_new_days(DRIFT, n, SETTINGS) for n in range(5)] == [7, 14, 28, 56, 56]
    assert [required_new_days(PERFORMANCE, n, SETTINGS) for n in range(8)] == [1, 2, 4, 8, 16, 32, 56, 56]
    backed_off = decide(_state(days=SUMMER[:7], rejections=1), SETTINGS)
    assert not backed_off.retrain and "7 of 14" in backed_off.reason and "after 1 candidate(s) not promoted" in backed_off.reason
    assert decide(_state(days=SUMMER + tuple(f"2013-07-{d:02d}" for d in range(1, 4)), rejections=1), SETTINGS).retrain


def test_a_zero_setting_retrains_at_once_until_a_rejection():
    eager = PolicySettings(cooldown_s=0, drift_min_new_days=0, performance_min_new_days=0)
    assert [required_new_days(DRIFT, n, eager) for n in range(4)] == [0, 1, 2, 4]
    assert decide(_state(days=()), eager).retrain, "no new day needed"
    assert not decide(_state(days=(), rejections=1), eager).retrain


def test_new_days_are_days_after_the_window_counted_once():
    assert new_labelled_days(["2013-03-31", "2013-06-20", "2013-06-20", "2013-06-21"], "2013-03-31") == 2
    assert new_labelled_days(["2013-01-01"], None) == 1


def test_one_warning_text_once_the_streak_reaches_the_threshold():
    assert backoff_warning(1, "3", SETTINGS) is None
    warning = backoff_warning(2, "3", SETTINGS)
    assert "last 2 candidate(s) were not promoted over champion v3" in warning
    assert "after 28 new labelled day(s)" in warning and "after 4" in warning


def test_an_unknown_trigger_is_refused():
    with pytest.raises(ValueError, match="unknown retraining trigger 'schedule'"):
        required_new_days("schedule", 0, SETTINGS)
