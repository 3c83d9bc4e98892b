"""Schedules: the daily monitoring run for yesterday's traffic and outcomes."""

import dagster as dg

from pipelines.jobs import monitoring_job

monitoring_schedule = dg.build_schedule_from_partitioned_job(
    monitoring_job,
    hour_of_day=6,
    minute_of_hour=0,
    name="daily_monitoring_schedule",
    description=(
        "06:00 each day: drift_report and model_performance for the day before (its traffic is complete"
        " and its arrivals have landed). Stopped by default: the 2013 partitions end before today's date;"
        " the replay demo plays the schedule's part for replayed days."
    ),
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
