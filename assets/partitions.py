"""Partitions shared by the assets: one per day of the reference year."""

import dagster as dg

FIRST_DAY = "2013-01-01"
END_EXCLUSIVE = "2014-01-01"

daily_partitions = dg.DailyPartitionsDefinition(start_date=FIRST_DAY, end_date=END_EXCLUSIVE)


def on_new_upstream_partition(ignore: list[str] = ()) -> dg.AutomationCondition:
    """Dagster's ``eager()`` for any partition, not only the latest time window.

    Replayed and backfilled days land far from "today" (2013 in a 2026 clock), and eager() only
    looks at the latest window. ``ignore``: upstream assets whose updates must not rerun every partition
    (a new champion must not rescore the year); they must still exist before anything runs.
    """
    eager = dg.AutomationCondition.eager().without(dg.AutomationCondition.in_latest_time_window())
    if not ignore:
        return eager.with_label("eager, any partition")
    selection = dg.AssetSelection.assets(*ignore)
    updated = dg.AutomationCondition.any_deps_updated().ignore(selection)
    return (
        (dg.AutomationCondition.newly_missing() | updated).since_last_handled()
        & ~dg.AutomationCondition.any_deps_missing()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label(f"eager, any partition, ignoring {', '.join(ignore)}")
