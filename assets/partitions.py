"""Partitions shared by the assets: one per day of the reference year."""

import dagster as dg

FIRST_DAY = "2013-01-01"
END_EXCLUSIVE = "2014-01-01"

daily_partitions = dg.DailyPartitionsDefinition(start_date=FIRST_DAY, end_date=END_EXCLUSIVE)
