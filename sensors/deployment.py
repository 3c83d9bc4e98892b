"""deploy_on_promotion_sensor: the champion alias moved and the newest Bento does not serve it → build one."""

import dagster as dg

from infra import settings
from infra.redaction import redact
from resources.mlflow_registry import MlflowRegistry
from sensors.runs import BENTO_JOB, TRAINING_JOB, in_flight_run

BENTO_ATTEMPTS = 3
"""Builds of one champion the deploy sensor starts before it gives up (and the failure sensor has alerted)."""


@dg.sensor(
    job_name=BENTO_JOB,
    minimum_interval_seconds=settings.sensors().interval_s or 60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="The champion alias moved and the newest Bento does not serve it → build and parity-check one.",
)
def deploy_on_promotion_sensor(context: dg.SensorEvaluationContext, registry: MlflowRegistry):
    try:
        candidate = registry.champion()
    except Exception as exc:  # the registry is down: try again next tick
        return dg.SkipReason(f"registry unreachable: {redact(exc)}"[:300])
    if candidate is None:
        return dg.SkipReason("no champion yet")
    champion = candidate.version
    records = context.instance.fetch_materializations(dg.AssetKey("bento"), limit=1).records
    latest = records[0] if records else None
    built = latest.asset_materialization.metadata.get("model_version") if latest else None
    if built is not None and str(built.value) == champion:
        return dg.SkipReason(f"the newest Bento already serves champion v{champion}")
    for job in (TRAINING_JOB, BENTO_JOB):
        if in_flight_run(context.instance, job) is not None:
            return dg.SkipReason(f"{job} is queued or running; it may build the Bento for v{champion}")
    since = latest.storage_id if latest else 0
    # The daemon's re-executions of a build carry its tags: one attempt is one run group, however retried.
    attempts = {
        r.dagster_run.root_run_id or r.dagster_run.run_id
        for r in context.instance.get_run_records(
            dg.RunsFilter(job_name=BENTO_JOB, tags={"deploy/champion_version": champion, "deploy/after_bento": str(since)})
        )
    }
    if len(attempts) >= BENTO_ATTEMPTS:
        return dg.SkipReason(f"{len(attempts)} Bento builds for champion v{champion} failed; see run_failure_alert")
    return dg.RunRequest(
        # A new key per champion move (the newest Bento changes) and per attempt: a rollback redeploys,
        # a failed build is retried, at most BENTO_ATTEMPTS times.
        run_key=f"bento-for-champion-v{champion}-after-{since}-attempt-{len(attempts) + 1}",
        tags={"deploy/champion_version": champion, "deploy/after_bento": str(since)},
    )
