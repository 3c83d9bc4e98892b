"""Ingestion benchmark on the full 2013 year: Dagster's single-run backfill vs the same work in plain Python.

    .venv/bin/python bench/ingest_bench.py [--to 2013-12-31]

Both sides parse, type and validate (GX) every landing file and write one Parquet file per day;
the ratio of their times is what orchestration costs us. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import sys
import time

import _bootstrap  # the project on sys.path, the shared set-up


def plain_ingest(storage, first: dt.date, last: dt.date) -> dict[str, int]:
    """The same work as ingest_job with no orchestrator: returns rows written per dataset."""
    import io

    from ml.contracts import ALL_ROWS, CONTRACTS
    from ml.ingestion import ingest_partitions
    from ml.landing import landing_key, reference_key

    days = [(first + dt.timedelta(d)).isoformat() for d in range((last - first).days + 1)]
    rows = {}
    for dataset, keys, key_of in (
        ("flights", days, lambda p: landing_key("flights", p)),
        ("weather", days, lambda p: landing_key("weather", p)),
        ("planes", [ALL_ROWS], lambda _: reference_key("planes")),
        ("airports", [ALL_ROWS], lambda _: reference_key("airports")),
    ):
        results = ingest_partitions(
            keys, CONTRACTS[dataset], read=lambda p, k=key_of: storage.read_bytes(k(p)), source_of=key_of
        )
        rows[dataset] = 0
        for partition, result in results.items():
            if result.frame is None:
                continue
            buffer = io.BytesIO()
            result.frame.to_parquet(buffer, index=False)
            storage.write_bytes(f"plain/{dataset}/{partition}.parquet", buffer.getvalue())
            rows[dataset] += len(result.frame)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--to", type=dt.date.fromisoformat, default=dt.date(2013, 12, 31))
    args = parser.parse_args()
    first, last = dt.date(2013, 1, 1), args.to
    root = _bootstrap.scratch_lake("ingest-bench-")

    import dagster as dg

    from ml.expectations import validate_partitions  # noqa: F401  (import cost outside the timings)
    from pipelines.replay import replay
    from pipelines.runner import run_job_over_range
    from resources import lake_storage_from_env

    import great_expectations  # noqa: F401

    storage = lake_storage_from_env()
    started = time.perf_counter()
    summary = replay(storage, first, last)
    print(f"replay {first}..{last}: {sum(summary.written.values())} files, "
          f"{summary.bytes_written / 1e6:.1f} MB in {time.perf_counter() - started:.1f} s")

    started = time.perf_counter()
    rows = plain_ingest(storage, first, last)
    plain_s = time.perf_counter() - started
    total_rows = rows["flights"] + rows["weather"]
    print(f"plain python : {plain_s:6.1f} s  {total_rows / plain_s:9,.0f} rows/s  {rows}")

    started = time.perf_counter()
    report = run_job_over_range("ingest_job", first.isoformat(), last.isoformat(), dg.DagsterInstance.ephemeral())
    dagster_s = time.perf_counter() - started
    days = (last - first).days + 1
    print(f"dagster run  : {dagster_s:6.1f} s  {total_rows / dagster_s:9,.0f} rows/s  "
          f"(one run, {len(report.materialized)} steps, {days} daily partitions)")
    print(f"ratio dagster/plain: {dagster_s / plain_s:.2f}; "
          f"orchestration per daily partition: {(dagster_s - plain_s) / days * 1000:.0f} ms")
    for line in report.lines()[1:]:
        print(line)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {peak:,.0f} MB; lake at {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
