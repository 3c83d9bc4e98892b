"""Materialize a sample of partitions and run their asset checks; exit 1 when any check fails.

    python -m pipelines.check_data --from 2013-01-01 --to 2013-01-07 --replay

Dagster itself exits 0 when a check fails, so CI calls this instead.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flightdelay check-data", description=__doc__.split("\n")[0])
    parser.add_argument("--from", dest="start", type=dt.date.fromisoformat, default=dt.date(2013, 1, 1))
    parser.add_argument("--to", dest="end", type=dt.date.fromisoformat, default=dt.date(2013, 1, 7))
    parser.add_argument(
        "--job", action="append", help="jobs to run over the range, in order (default: ingest_job, features_job)"
    )
    parser.add_argument("--replay", action="store_true", help="first replay the sample days into the landing zone")
    args = parser.parse_args(argv)

    from pipelines.replay import replay
    from pipelines.runner import instance_from_env, run_job_over_range
    from resources import lake_storage_from_env

    if args.replay:
        replay(lake_storage_from_env(), args.start, args.end)
    instance = instance_from_env()
    checks, failed, warned, runs_ok = 0, 0, 0, True
    for job in args.job or ["ingest_job", "features_job"]:
        report = run_job_over_range(job, args.start.isoformat(), args.end.isoformat(), instance)
        print("\n".join(report.lines()))
        checks += len(report.checks)
        failed += len(report.failed_checks)
        warned += sum(not c.passed and c.severity == "WARN" for c in report.checks)
        runs_ok = runs_ok and report.success
    if not checks:
        print("check_data: no asset check ran: nothing was verified", file=sys.stderr)
        return 1
    if failed or not runs_ok:
        print(f"check_data: {failed} check(s) failed", file=sys.stderr)
        return 1
    print(f"check_data: all {checks} check(s) passed" + (f" ({warned} of them with a warning)" if warned else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
