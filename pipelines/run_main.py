"""``make run``: replay real days into the lake and run the main job over them, on embedded defaults.

The run goes to the instance in ``DAGSTER_HOME`` (the Makefile sets ``.dagster_home``), the same
one ``make dev`` opens, so it shows in the UI.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time

MAIN_JOB = "ingest_job"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.run_main", description=__doc__.split("\n")[0])
    parser.add_argument("--from", dest="start", type=dt.date.fromisoformat, default=dt.date(2013, 1, 1))
    parser.add_argument("--to", dest="end", type=dt.date.fromisoformat, default=dt.date(2013, 1, 31))
    args = parser.parse_args(argv)

    from pipelines.replay import replay
    from pipelines.runner import instance_from_env, run_job_over_range
    from resources import lake_storage_from_env

    storage = lake_storage_from_env()
    started = time.perf_counter()
    summary = replay(storage, args.start, args.end)
    print(
        f"landing zone {storage.uri('landing')}: {sum(summary.written.values())} file(s) dropped, "
        f"{summary.skipped_existing} already there ({time.perf_counter() - started:.1f} s)"
    )
    instance = instance_from_env()
    report = run_job_over_range(MAIN_JOB, args.start.isoformat(), args.end.isoformat(), instance)
    print("\n".join(report.lines()))
    print(f"Parquet under {storage.uri('warehouse')}; quarantined files under {storage.uri('quarantine')}")
    print("See the run in the UI: make dev  (http://127.0.0.1:3000)")
    return 0 if report.success and not report.failed_checks else 1


if __name__ == "__main__":
    sys.exit(main())
