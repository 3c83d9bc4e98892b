"""Run a range of daily partitions as one run (the single-run backfill), in process or by the CLI."""

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def range_tags(first: str, last: str) -> dict[str, str]:
    """Run tags that make one run cover every partition from ``first`` to ``last`` inclusive."""
    return {RANGE_START_TAG: first, RANGE_END_TAG: last}
