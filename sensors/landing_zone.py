"""landing_zone_sensor: a new or changed landing file → a run for exactly its partition and version.

Daily files (``landing/<dataset>/date=…csv``) run their day of ``raw_flights`` / ``raw_weather``; the
reference tables (``landing/reference/planes.csv``, ``airports.csv``) run ``planes`` / ``airports``,
so an instance driven by the daemon alone keeps them current too.
"""


import hashlib
import json
from dataclasses import dataclass, field

import dagster as dg

from assets.ingest import LANDING_KEY as LANDING_KEY_TAG, LANDING_VERSION as LANDING_VERSION_TAG
from assets.partitions import daily_partitions
from ml.landing import REFERENCE_PREFIX, daily_partition_of, dataset_prefix, reference_dataset_of, why_not_a_landing_file
from resources.storage import LakeStorage, StoredObject
from infra import settings

DATASET_ASSETS = {"flights": "raw_flights", "weather": "raw_weather"}
REFERENCE_ASSETS = {"planes": "planes", "airports": "airports"}
REFERENCE = "reference"  # the cursor's dataset for reference tables: their "day" is the table's name
MAX_TRACKED = 4_000  # files whose version the cursor remembers: 5 years of two daily datasets
MAX_IGNORED = 200  # misnamed files remembered so that each is warned about once
_DIGEST_CHARS = 12


def version_digest(version: str) -> str:
    """48 bits of a version: enough to tell one file's successive versions apart, small in a cursor."""
    return hashlib.sha256(version.encode()).hexdigest()[:_DIGEST_CHARS]


@dataclass
class LandingCursor:
    """The version the sensor last saw of each landing file, by dataset and day.

    No timestamps: a file copied with an older mtime, or rewritten while its run is in flight, is
    a new version and nothing else. Bounded: only files that name a day of ``daily_partitions``
    are tracked (two per day of the partitions' window), at most ``MAX_TRACKED`` (the newest days
    win), as 12-hex digests (~20 kB for the year). A file not tracked, because it is new or was
    dropped for size, is compared with the landing version that its partition's latest
    materialization recorded instead (``landing_version_ingested``). Reference tables are tracked
    under ``seen["reference"][<table>]``; their names sort after every day, so bounding never drops them.
    """

    seen: dict[str, dict[str, str]] = field(default_factory=dict)  # dataset → day → version digest
    ignored: dict[str, str] = field(default_factory=dict)  # key → digest, warned about once
    generation: int = 0  # ticks that requested runs: part of each run key (see run_request_for)

    @classmethod
    def parse(cls, raw: str | None) -> "LandingCursor":
        """A cursor from its stored form; one from an older format starts empty (see above: safe)."""
        if not raw:
            return cls()
        data = json.loads(raw)
        if data.get("v") != 2:
            return cls()
        return cls(
            seen={d: dict(days) for d, days in data.get("seen", {}).items()},
            ignored=dict(data.get("ignored", {})),
            generation=int(data.get("generation", 0)),
        )

    def dump(self) -> str:
        return json.dumps(
            {"v": 2, "seen": self.seen, "ignored": self.ignored, "generation": self.generation},
            sort_keys=True, separators=(",", ":"),
        )

    def knows(self, dataset: str, day: str, version: str) -> bool:
        return self.seen.get(dataset, {}).get(day) == version_digest(version)

    def remember(self, dataset: str, day: str, version: str) -> None:
        self.seen.setdefault(dataset, {})[day] = version_digest(version)

    def bound(self, max_tracked: int | None = None, max_ignored: int | None = None) -> None:
        """Forget the oldest days beyond ``MAX_TRACKED`` files, and misnamed keys beyond ``MAX_IGNORED``."""
        max_tracked = MAX_TRACKED if max_tracked is None else max_tracked
        max_ignored = MAX_IGNORED if max_ignored is None else max_ignored
        tracked = sorted(((day, d) for d, days in self.seen.items() for day in days), reverse=True)
        for day, dataset in tracked[max_tracked:]:
            del self.seen[dataset][day]
        self.seen = {d: days for d, days in self.seen.items() if days}
        if len(self.ignored) > max_ignored:
            self.ignored = dict(sorted(self.ignored.items())[:max_ignored])


def landing_version_ingested(instance: dg.DagsterInstance, asset: str, partition: str | None) -> tuple[str, str] | None:
    """(landing key, version) that the partition's (or an unpartitioned asset's) latest materialization read, if recorded."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition] if partition else None),
        limit=1,
    ).records
    if not records or records[0].asset_materialization is None:
        return None
    metadata = records[0].asset_materialization.metadata
    key, version = metadata.get(LANDING_KEY_TAG), metadata.get(LANDING_VERSION_TAG)
    if key is None or version is None:
        return None
    return str(key.value), str(version.value)


def run_request_for(obj: StoredObject, asset: str, partition: str | None, generation: int) -> dg.RunRequest:
    """A run that ingests exactly this version of this file (the run fails if it changed meanwhile).

    The run key adds the cursor's generation to key and version: a tick retried from the same
    stored cursor asks for the same keys (Dagster launches each once), while a version that comes
    back after another was ingested (A, B, A again) is a new key, not one Dagster would skip.
    ``partition`` is None for a reference table (an unpartitioned asset of ``ingest_job``).
    """
    return dg.RunRequest(
        run_key=f"{obj.key}@{obj.version}#{generation}",
        partition_key=partition,
        asset_selection=[dg.AssetKey(asset)],
        tags={LANDING_KEY_TAG: obj.key, LANDING_VERSION_TAG: obj.version},
    )


def _target(dataset: str, key: str) -> tuple[str, str | None] | str:
    """(asset, partition) a listed file feeds, or why it feeds none (a reference table has no partition)."""
    if dataset == REFERENCE:
        name = reference_dataset_of(key)
        if name in REFERENCE_ASSETS:
            return REFERENCE_ASSETS[name], None
        return f"reference tables are {', '.join(f'{REFERENCE_PREFIX}{n}.csv' for n in REFERENCE_ASSETS)}"
    partition = daily_partition_of(dataset, key)
    if partition is None:
        return why_not_a_landing_file(dataset, key)
    if not daily_partitions.has_partition_key(partition):
        return f"{partition} is outside {daily_partitions}"
    return DATASET_ASSETS[dataset], partition


def plan_runs(
    listed: list[tuple[str, StoredObject]], cursor: LandingCursor, instance: dg.DagsterInstance, log
) -> list[dg.RunRequest]:
    """One request per (file, version) not seen before and not already ingested; updates ``cursor``."""
    requests = []
    generation = cursor.generation + 1
    for dataset, obj in listed:
        target = _target(dataset, obj.key)
        if isinstance(target, str):
            digest = version_digest(obj.version)
            if cursor.ignored.get(obj.key) != digest:
                log.warning(f"landing_zone_sensor: ignoring {obj.key}: {target}")
                cursor.ignored[obj.key] = digest
            continue
        asset, partition = target
        slot = partition or asset  # a reference table is tracked under its own name
        if cursor.knows(dataset, slot, obj.version):
            continue
        if landing_version_ingested(instance, asset, partition) == (obj.key, obj.version):
            log.info(f"landing_zone_sensor: {obj.key} version {obj.version} was already ingested")
        else:
            requests.append(run_request_for(obj, asset, partition, generation))
        cursor.remember(dataset, slot, obj.version)
    if requests:
        cursor.generation = generation
    cursor.bound()
    return requests


@dg.sensor(
    job_name="ingest_job",
    minimum_interval_seconds=settings.sensors().interval_s or 30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Requests an ingestion run for each new or changed file under landing/flights and landing/weather, "
        "and for a new version of landing/reference/planes.csv or airports.csv."
    ),
)
def landing_zone_sensor(context: dg.SensorEvaluationContext, storage: LakeStorage):
    cursor = LandingCursor.parse(context.cursor)
    listed: list[tuple[str, StoredObject]] = []
    for dataset in (*DATASET_ASSETS, REFERENCE):
        try:
            objects = storage.list(dataset_prefix(dataset))
        except Exception as exc:  # storage down: skip the tick, keep the cursor, never crash
            from infra.redaction import redact

            return dg.SkipReason(f"cannot list landing/{dataset}/: {redact(str(exc))}")
        listed.extend((dataset, o) for o in objects)
    before = cursor.dump()
    requests = plan_runs(listed, cursor, context.instance, context.log)
    if cursor.dump() != before:
        context.update_cursor(cursor.dump())
    if not requests:
        return dg.SkipReason("no new landing files still to ingest")
    return requests
