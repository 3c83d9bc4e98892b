"""`flightdelay`: one command line for what were a dozen `python -m pipelines.…` modules."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipelines.cli import COMMANDS, cli

ROOT = Path(__file__).resolve().parents[1]


def test_the_console_script_is_declared_and_installed():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"flightdelay": "pipelines.cli:cli"}
    installed = Path(sys.executable).parent / "flightdelay"
    result = subprocess.run([str(installed), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "Exit codes" in result.stdout
    assert all(name in result.stdout for name in COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_subcommand_answers_help_with_its_own_options(name):
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert f"usage: flightdelay {name}" in " ".join(result.output.split())


def test_a_wrong_command_line_exits_2_saying_what_was_wrong():
    result = CliRunner().invoke(cli, ["replay", "--from", "yesterday"])
    assert result.exit_code == 2 and "--from" in result.output
    assert CliRunner().invoke(cli, ["no-such-command"]).exit_code == 2


def test_replay_through_the_cli_fills_the_landing_zone(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.delenv("LAKE_URL", raising=False)
    result = CliRunner().invoke(cli, ["replay", "--from", "2013-01-01", "--to", "2013-01-02", "--no-reference"])
    assert result.exit_code == 0, result.output
    assert "flights=2, weather=2" in result.output
    assert sorted(p.name for p in (tmp_path / "lake" / "landing" / "flights").iterdir()) == [
        "date=2013-01-01.csv", "date=2013-01-02.csv"]


def test_verified_bento_says_what_to_do_and_exits_1_on_an_empty_instance(tmp_path, monkeypatch):
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    result = subprocess.run([str(Path(sys.executable).parent / "flightdelay"), "verified-bento"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 1 and "run `make run`" in result.stderr
    assert "Warning" not in result.stderr, "no library warnings on the terminal (Dagster's BetaWarning)"
