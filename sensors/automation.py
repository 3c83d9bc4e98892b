"""Declarative automation: new raw days → features → batch predictions, as their partitions land.

Chosen over sensors for this part of the graph: the conditions live on the assets
(`on_new_upstream_partition` in assets/partitions.py), Dagster tracks which partitions are handled,
and a range that lands at once becomes one run (single-run backfill policy). Monitoring is
scheduled instead (a day is complete only once its traffic and arrivals are in), and retraining is
a sensor (it reacts to check results, with a cooldown).
"""

import dagster as dg

from infra import settings

automation_sensor = dg.AutomationConditionSensorDefinition(
    "automation_sensor",
    target=dg.AssetSelection.all(),
    minimum_interval_seconds=settings.sensors().interval_s or 30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Evaluates the assets' automation conditions (features and batch predictions of new days).",
)
