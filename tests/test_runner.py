"""The command line's runs: nothing on the terminal but their report, as a person reads `make run`."""

import datetime as dt
from pathlib import Path

import dagster as dg

ROOT = Path(__file__).resolve().parents[1]


def test_a_run_on_the_local_instance_prints_nothing_and_its_report_names_the_nulled_reading(
        tmp_path, monkeypatch, capfd):
    """2013-02-12 on the shipped local instance: ingest_job succeeds, Dagster's console and JSON
    logs stay off the terminal, and the report's one line on the weather check names day, column,
    value and the quarantine report."""
    from pipelines.definitions import build_definitions
    from pipelines.replay import replay
    from pipelines.runner import run_job_over_range
    from resources import lake_storage_from_env

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "deploy" / "dagster-local.yaml").read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("LAKE_URL", raising=False)
    monkeypatch.delenv("PIPELINE_JSON_LOGS", raising=False)
    day = dt.date(2013, 2, 12)
    replay(lake_storage_from_env(), day, day)
    capfd.readouterr()
    with dg.DagsterInstance.get() as instance:
        # resources from this test's environment (the module-level defs were bound at their import)
        report = run_job_over_range("ingest_job", day.isoformat(), day.isoformat(), instance, defs=build_definitions())
    printed = capfd.readouterr()
    assert report.success and not report.failed_checks, report.lines()
    assert printed.out == "" and printed.err == "", (printed.out + printed.err)[:2000]
    (weather,) = [line for line in report.lines() if "raw_weather:landing_contract" in line]
    assert "PASSED" in weather and "2013-02-12" in weather and "wind_speed" in weather and "1048.36" in weather
    assert "quarantine/weather/2013-02-12/nulled_readings.json" in weather


def test_a_day_held_back_is_one_warning_line_naming_day_column_value_and_quarantine(tmp_path, monkeypatch, capfd):
    """Impossible wind readings in more reports than the share allows: the day is held back, and the
    report says so in one WARNING line (no FAILED check line, no step error repeating it)."""
    from pipelines.definitions import build_definitions
    from pipelines.replay import replay
    from pipelines.runner import run_job_over_range
    from resources import lake_storage_from_env
    from tests.conftest import break_wind_readings

    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("LAKE_URL", raising=False)
    day = dt.date(2013, 2, 13)
    replay(lake_storage_from_env(), day, day)
    break_wind_readings(lake_storage_from_env(), day.isoformat(), rows=10)
    capfd.readouterr()
    report = run_job_over_range("ingest_job", day.isoformat(), day.isoformat(), dg.DagsterInstance.ephemeral(),
                                defs=build_definitions())
    printed = capfd.readouterr()
    assert printed.out == "" and printed.err == "", (printed.out + printed.err)[:2000]
    assert not report.success and len(report.failed_checks) == 1
    (warning,) = [line for line in report.lines(holds_as_warnings=True) if line.startswith("  WARNING")]
    assert "raw_weather" in warning and "2013-02-13" in warning and "'wind_speed'" in warning and "1048.36" in warning
    assert "quarantine/weather/2013-02-13" in warning
    assert not [line for line in report.lines(holds_as_warnings=True) if "FAILED" in line or "error:" in line]
    assert any("raw_weather:landing_contract FAILED" in line for line in report.lines()), "check-data keeps FAILED"
