"""The check-history adapter (sensors/check_history.py) on a real instance: what the retrain sensor relies on."""

import dagster as dg
import pytest

from sensors.check_history import FAILED, PLANNED, SUCCEEDED, check_executions

KEY = dg.AssetCheckKey(dg.AssetKey("gauge"), "gauge_check")


def _gauge(outcome: str):
    @dg.asset(name="gauge", check_specs=[dg.AssetCheckSpec("gauge_check", asset="gauge")])
    def gauge():
        if outcome == "crash":
            raise RuntimeError("the step failed before its check was evaluated")
        yield dg.MaterializeResult()
        yield dg.AssetCheckResult(check_name="gauge_check", passed=outcome == "pass", description=f"outcome {outcome}")

    return gauge


def test_executions_newest_first_with_status_run_and_description():
    instance = dg.DagsterInstance.ephemeral()
    runs = [dg.materialize([_gauge(o)], instance=instance, raise_on_error=False).run_id for o in ("pass", "fail", "crash")]

    executions = check_executions(instance, KEY, limit=10)
    assert [e.run_id for e in executions] == runs[::-1]
    assert [e.status for e in executions] == [PLANNED, FAILED, SUCCEEDED], "a crashed step leaves its check planned"
    assert [e.description for e in executions] == ["", "outcome fail", "outcome pass"]
    assert executions[0].id > executions[1].id > executions[2].id and all(e.key == KEY for e in executions)
    assert [e.run_id for e in check_executions(instance, KEY, limit=1)] == [runs[-1]]


@pytest.mark.parametrize("limit", [1, 50])
def test_no_executions_of_an_unknown_check(limit):
    assert check_executions(dg.DagsterInstance.ephemeral(), dg.AssetCheckKey(dg.AssetKey("none"), "x"), limit) == []
