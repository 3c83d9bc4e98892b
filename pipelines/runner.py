"""Run a job of the code location over a range of days, in this process, and say what happened."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import dagster as dg

from assets.ingest import CONTRACT_CHECK as LANDING_CONTRACT_CHECK
from pipelines.partition_ranges import range_tags

_BLOCKING_CHECK_FAILED = "blocking asset check"  # Dagster's step failure for a failed blocking check


@dataclass
class CheckOutcome:
    asset: str
    check: str
    passed: bool
    description: str
    severity: str = "ERROR"
    """``WARN``: a failure that holds nothing back (a warning check, e.g. feature null shares)."""

    @property
    def held_back(self) -> bool:
        """An expected data-quality hold: the landing contract fails only for partitions it kept out (quarantined, named)."""
        return not self.passed and self.check == LANDING_CONTRACT_CHECK


@dataclass
class RunReport:
    run_id: str
    job: str
    success: bool
    seconds: float
    materialized: dict[str, int] = field(default_factory=dict)  # asset → partitions materialized
    checks: list[CheckOutcome] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def failed_checks(self) -> list[CheckOutcome]:
        return [c for c in self.checks if not c.passed and c.severity != "WARN"]

    def lines(self, holds_as_warnings: bool = False) -> list[str]:
        """What happened, a line each. ``holds_as_warnings`` (``make run``): a day the landing contract
        held back is one WARNING line, not a FAILED check plus the step error it causes (``check-data``,
        CI, keeps FAILED: a hold fails its exit code)."""
        out = [
            f"run {self.run_id} of {self.job}: {'SUCCESS' if self.success else 'FAILURE'} in {self.seconds:.1f} s"
        ]
        for asset, count in sorted(self.materialized.items()):
            out.append(f"  materialized {asset}: {count} partition(s)")
        for c in self.checks:
            if holds_as_warnings and c.held_back:
                out.append(f"  WARNING {c.asset}: {c.description}")
                continue
            verdict = "PASSED" if c.passed else "WARNING" if c.severity == "WARN" else "FAILED"
            out.append(f"  check {c.asset}:{c.check} {verdict} - {c.description}")
        # A blocking check that held data back fails its step too: its line above says why, once.
        out.extend(f"  error: {e}" for e in self.errors
                   if not (holds_as_warnings and _BLOCKING_CHECK_FAILED in e and any(c.held_back for c in self.checks)))
        return out


def instance_from_env() -> dg.DagsterInstance:
    """The instance in ``DAGSTER_HOME`` (what ``dagster dev`` shows), or an ephemeral one."""
    return dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()


def run_job_over_range(
    job_name: str,
    first: str,
    last: str,
    instance: dg.DagsterInstance,
    defs: dg.Definitions | None = None,
    log_level: str = "CRITICAL",
) -> RunReport:
    """Execute ``job_name`` for every day from ``first`` to ``last`` as one run, in process.

    An unpartitioned job (training) ignores the range: its own config decides its window. Dagster's
    console logger stays quiet below ``log_level`` (by default it says nothing): the report says
    what happened, the instance keeps every event.
    """
    if defs is None:
        from pipelines.definitions import defs
    job = defs.resolve_job_def(job_name)
    started = time.perf_counter()
    result = job.execute_in_process(
        instance=instance,
        tags=range_tags(first, last) if job.partitions_def is not None else None,
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
    )
    report = RunReport(
        run_id=result.run_id, job=job_name, success=result.success, seconds=time.perf_counter() - started
    )
    for event in result.get_asset_materialization_events():
        key = event.asset_key.to_user_string()
        report.materialized[key] = report.materialized.get(key, 0) + 1
    for evaluation in result.get_asset_check_evaluations():
        report.checks.append(
            CheckOutcome(
                asset=evaluation.asset_key.to_user_string(),
                check=evaluation.check_name,
                passed=evaluation.passed,
                description=evaluation.description or "",
                severity=evaluation.severity.value,
            )
        )
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            report.errors.append(f"{event.step_key}: {event.step_failure_data.error.message.strip()}")
    return report
