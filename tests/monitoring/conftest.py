"""promtool and prometheus for the monitoring tests: skipped with what to install where missing, failed under REQUIRE_PROMETHEUS=1 (CI)."""

import shutil

import pytest

from infra import settings


def prometheus_binary(name: str) -> str:
    """The path of ``name`` (``promtool``, ``prometheus``); skips the test where it is missing, fails it in CI."""
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed: apt-get install prometheus (Debian ships promtool with it)"
        if settings.ci().require_prometheus:
            pytest.fail(f"REQUIRE_PROMETHEUS is set, but {reason}", pytrace=False)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    return prometheus_binary("promtool")


@pytest.fixture(scope="session")
def prometheus() -> str:
    return prometheus_binary("prometheus")
