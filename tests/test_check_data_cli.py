"""The CI entry point: exit 0 when every check passes, 1 when one fails."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def _run(data_dir, *args):
    env = {**os.environ, "DATA_DIR": str(data_dir), "DAGSTER_HOME": ""}
    env.pop("LAKE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "pipelines.check_data", "--from", "2013-01-01", "--to", "2013-01-02", *args],
        capture_output=True, text=True, env=env, timeout=300,
    )


def test_exit_code_follows_the_checks(tmp_path):
    good = _run(tmp_path, "--replay")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "all 8 check(s) passed" in good.stdout

    landing = tmp_path / "lake" / "landing" / "weather" / "date=2013-01-02.csv"
    landing.write_text(landing.read_text().replace("EWR,", "XXX,", 3))
    bad = _run(tmp_path, "--replay")  # replay keeps files already there: the broken one stays
    assert bad.returncode == 1
    assert "check raw_weather:landing_contract FAILED" in bad.stdout
    assert "2013-01-02" in bad.stdout
    assert "1 check(s) failed" in bad.stderr
