"""landing_zone_sensor: a new or changed landing file → a run for exactly its partition."""


import json
from dataclasses import dataclass, field

import dagster as dg

from assets.partitions import daily_partitions
from ml.landing import partition_of
from resources.storage import LakeStorage, StoredObject
from resources import settings

DATASET_ASSETS = {"flights": "raw_flights", "weather": "raw_weather"}


@dataclass
class LandingCursor:
    """The newest modification time seen, and the versions seen at exactly that time.

    Objects modified strictly before ``since`` were handled already; a file rewritten later gets a
    newer time, so it is seen again. Keeping only the keys at ``since`` keeps the cursor small.
    """

    since: float = 0.0
    at_since: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: str | None) -> "LandingCursor":
        if not raw:
            return cls()
        data = json.loads(raw)
        return cls(since=float(data.get("since", 0.0)), at_since=dict(data.get("at_since", {})))

    def dump(self) -> str:
        return json.dumps({"since": self.since, "at_since": self.at_since}, sort_keys=True)


def new_objects(objects: list[StoredObject], cursor: LandingCursor) -> tuple[list[StoredObject], "LandingCursor"]:
    """The objects not seen before, and the cursor that remembers them."""
    fresh = [
        o for o in objects
        if o.modified > cursor.since or (o.modified == cursor.since and cursor.at_since.get(o.key) != o.version)
    ]
    if not fresh:
        return [], cursor
    newest = max(o.modified for o in fresh)
    if newest > cursor.since:
        at_since = {o.key: o.version for o in objects if o.modified == newest}
        return fresh, LandingCursor(since=newest, at_since=at_since)
    return fresh, LandingCursor(since=cursor.since, at_since={**cursor.at_since, **{o.key: o.version for o in fresh}})


def _ingested_since_landing(instance: dg.DagsterInstance, asset: str, partition: str, landed: float) -> bool:
    """Whether the partition was materialized after the file landed (e.g. by `make run` or a backfill)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1
    ).records
    return bool(records) and records[0].timestamp >= landed


def run_request_for(
    obj: StoredObject, dataset: str, instance: dg.DagsterInstance, log
) -> dg.RunRequest | None:
    partition = partition_of(obj.key)
    if partition is None:
        log.warning(f"landing_zone_sensor: ignoring {obj.key}: name is not date=YYYY-MM-DD.csv")
        return None
    if not daily_partitions.has_partition_key(partition):
        log.warning(f"landing_zone_sensor: ignoring {obj.key}: {partition} is outside {daily_partitions}")
        return None
    if _ingested_since_landing(instance, DATASET_ASSETS[dataset], partition, obj.modified):
        log.info(f"landing_zone_sensor: {obj.key} was already ingested after it landed")
        return None
    return dg.RunRequest(
        run_key=f"{obj.key}@{obj.version}",
        partition_key=partition,
        asset_selection=[dg.AssetKey(DATASET_ASSETS[dataset])],
        tags={"landing/key": obj.key, "landing/version": obj.version},
    )


@dg.sensor(
    job_name="ingest_job",
    minimum_interval_seconds=settings.sensor_interval_s(30),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests an ingestion run for each new or changed file under landing/flights and landing/weather.",
)
def landing_zone_sensor(context: dg.SensorEvaluationContext, storage: LakeStorage):
    cursor = LandingCursor.parse(context.cursor)
    listed: list[tuple[str, StoredObject]] = []
    for dataset in DATASET_ASSETS:
        try:
            objects = storage.list(f"landing/{dataset}/")
        except Exception as exc:  # storage down: skip the tick, keep the cursor, never crash
            return dg.SkipReason(f"cannot list landing/{dataset}/: {exc}")
        listed.extend((dataset, o) for o in objects)
    fresh, next_cursor = new_objects([o for _, o in listed], cursor)
    if not fresh:
        return dg.SkipReason("no new landing files")
    dataset_of = {o.key: d for d, o in listed}
    requests = [
        r for o in fresh if (r := run_request_for(o, dataset_of[o.key], context.instance, context.log))
    ]
    context.update_cursor(next_cursor.dump())
    if not requests:
        return dg.SkipReason(f"{len(fresh)} new file(s), none a daily landing file still to ingest")
    return requests
