"""The history of an asset check's executions: the one place that reads it from Dagster's event log storage.

Dagster 1.13 has no public API for a check's past executions (``DagsterInstance`` offers the
latest materializations and observations, not check evaluations; ``get_event_records`` is
deprecated), so this adapter reads ``instance.event_log_storage.get_asset_check_execution_history``
and turns its records into a small public type. ``tests/test_check_history.py`` pins what it returns
on a real instance: when Dagster changes, that test fails here, not a sensor in production.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

PLANNED, SUCCEEDED, FAILED = "planned", "succeeded", "failed"


@dataclass(frozen=True)
class CheckExecution:
    """One execution of an asset check: planned when its step started, then succeeded or failed in place.

    ``id`` grows with every execution (a cursor can hold it); ``description`` is the evaluation's,
    empty while planned.
    """

    id: int
    key: dg.AssetCheckKey
    run_id: str
    status: str
    description: str


def check_executions(instance: dg.DagsterInstance, key: dg.AssetCheckKey, limit: int) -> list[CheckExecution]:
    """The newest ``limit`` executions of the check ``key``, newest first."""
    records = instance.event_log_storage.get_asset_check_execution_history(key, limit=limit)
    return [
        CheckExecution(id=r.id, key=r.key, run_id=r.run_id, status=r.status.value.lower(), description=_description(r))
        for r in records
    ]


def _description(record) -> str:
    event = record.event.dagster_event if record.event is not None else None
    evaluation = event.event_specific_data if event is not None else None
    return getattr(evaluation, "description", None) or ""
