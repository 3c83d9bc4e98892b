"""Ingestion: landing CSVs → typed Parquet, guarded by blocking Great Expectations checks."""


import inspect
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import dagster as dg

from assets.partitions import daily_partitions
from assets.policies import IO_RETRY
from assets.versions import derived_code_version
from ml.contracts import AIRPORTS, ALL_ROWS, FLIGHTS, PLANES, WEATHER, Contract
from ml.landing import landing_key, reference_key
from ml.tables import Table
from resources.storage import LakeArea, LakeStorage, ObjectChanged

LANDING_KEY = "landing/key"  # run tag (set by landing_zone_sensor) and materialization metadata
LANDING_VERSION = "landing/version"

CONTRACT_CHECK = "landing_contract"
NULLED_READINGS_REPORT = "nulled_readings.json"
_MAX_PARTITIONS_IN_METADATA = 20


def _contract_check_spec(asset: str, contract: Contract) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        CONTRACT_CHECK,
        asset=asset,
        blocking=True,
        description=(
            f"Great Expectations suite of the {contract.dataset} contract: columns and types, "
            "non-null keys, unique key per partition, value ranges, row count > 0. A partition that "
            "fails is quarantined and never written where downstream reads."
        ),
    )


class LandingConfig(dg.Config):
    """How strictly a landing file must match its contract's columns."""

    reject_extra_columns: bool = False
    """Hold back a file with columns the contract does not name; by default they are recorded
    in the metadata (``landing/extra_columns``) and not ingested."""


def _column_schema(contract: Contract) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(c.name, c.dtype, constraints=dg.TableColumnConstraints(nullable=c.nullable))
            for c in contract.columns
        ]
    )


def _quarantine(storage: LakeStorage, contract: Contract, ingested) -> str:
    """Keep a rejected landing file and the reasons beside it; nothing is lost."""
    folder = LakeStorage.area_key(LakeArea.QUARANTINE, contract.dataset, ingested.verdict.partition)
    if ingested.landing_bytes is not None:
        storage.write_bytes(f"{folder}/{ingested.source.rsplit('/', 1)[-1]}", ingested.landing_bytes)
    report = {"source": ingested.source, "reasons": ingested.verdict.reasons()}
    storage.write_bytes(f"{folder}/report.json", json.dumps(report, indent=2, default=str).encode())
    return storage.uri(folder)


def _quarantine_readings(storage: LakeStorage, contract: Contract, ingested) -> str:
    """Record the impossible readings a partition was ingested without (the landing file keeps them)."""
    key = LakeStorage.area_key(LakeArea.QUARANTINE, contract.dataset, ingested.verdict.partition, NULLED_READINGS_REPORT)
    report = {"source": ingested.source, "rows": ingested.verdict.rows,
              "max_nulled_share": contract.max_nulled_share, "nulled": [asdict(n) for n in ingested.nulled]}
    storage.write_bytes(key, json.dumps(report, indent=2, default=str).encode())
    return storage.uri(key)


def _keep_what_was_left_out(
    context: dg.AssetExecutionContext, storage: LakeStorage, contract: Contract, asset: str, results: dict
) -> tuple[dict[str, str], dict[str, str]]:
    """Quarantine held-back files and record nulled readings, a warning each; (held back, nulled) →
    where each partition's record went."""
    quarantined, nulled_reports = {}, {}
    for key, result in results.items():
        if not result.verdict.passed:
            quarantined[key] = _quarantine(storage, contract, result)
            context.log.warning(f"{asset} {key} held back ({result.source}): {'; '.join(result.verdict.reasons())}")
            continue
        if result.nulled:
            nulled_reports[key] = _quarantine_readings(storage, contract, result)
            context.log.warning(
                f"{asset} {key}: {'; '.join(n.describe() for n in result.nulled)}; report {nulled_reports[key]}"
            )
        if result.extra_columns:
            context.log.warning(
                f"{asset} {key}: column(s) {result.extra_columns} of {result.source} are not in the "
                f"{contract.dataset} contract and were not ingested (recorded as landing/extra_columns)"
            )
    return quarantined, nulled_reports


def _check_result(
    asset: str, contract: Contract, results: dict, quarantined: dict[str, str], nulled_reports: dict[str, str]
) -> dg.AssetCheckResult:
    from ml.expectations import suite_size
    from ml.ingestion import bad_rows_sample

    failed = {key: r for key, r in results.items() if not r.verdict.passed}
    metadata: dict[str, object] = {
        "partitions_checked": len(results),
        "partitions_failed": len(failed),
        "expectations_per_partition": suite_size(contract, daily=contract.date_columns is not None),
        "readings_nulled": sum(n.count for r in results.values() for n in r.nulled),
    }
    if nulled_reports:
        metadata["nulled_readings"] = dg.MetadataValue.json(
            {key: {"nulled": [n.describe() for n in results[key].nulled], "report": report}
             for key, report in list(nulled_reports.items())[:_MAX_PARTITIONS_IN_METADATA]}
        )
    if failed:
        shown = list(failed)[:_MAX_PARTITIONS_IN_METADATA]
        metadata["failed_partitions"] = dg.MetadataValue.json(
            {
                key: {"file": failed[key].source, "reasons": failed[key].verdict.reasons(), "quarantine": quarantined.get(key)}
                for key in shown
            }
        )
        first = failed[shown[0]]
        sample = bad_rows_sample(first)
        metadata["bad_rows_sample"] = dg.MetadataValue.md(
            f"**{asset} {first.verdict.partition}** ({first.source})\n\n"
            + "\n".join(f"- {reason}" for reason in first.verdict.reasons())
            + ("\n\n" + sample.to_markdown(index=False) if not sample.empty else "")
        )
    description = (
        f"{len(results)} partition(s) met the {contract.dataset} contract"
        if not failed
        else f"{len(failed)} of {len(results)} partition(s) held back: "
        + "; ".join(f"{k}: {failed[k].verdict.reasons()[0]} (quarantined in {quarantined.get(k)})"
                    for k in list(failed)[:3])
    )
    if nulled_reports:
        description += "; impossible readings nulled row by row: " + "; ".join(
            f"{key}: {', '.join(n.describe() for n in results[key].nulled)} (report {report})"
            for key, report in list(nulled_reports.items())[:3]
        )
    return dg.AssetCheckResult(
        check_name=CONTRACT_CHECK,
        asset_key=asset,
        passed=not failed,
        metadata=metadata,
        description=description[:2000],
    )


def _expected_versions(context: dg.AssetExecutionContext, partitions: list[str], key_of) -> dict[str, str]:
    """The landing version the run was requested for, by partition (only sensor runs name one)."""
    key, version = context.run.tags.get(LANDING_KEY), context.run.tags.get(LANDING_VERSION)
    if not (key and version):
        return {}
    return {p: version for p in partitions if key_of(p) == key}


def _landing_metadata(key: str, version: str | None, result) -> dict[str, object]:
    """What a partition was made from: the landing file and version read, its rows, whether they were
    held back, and columns left out (rows and held back: the pipeline metrics exporter reads them)."""
    metadata: dict[str, object] = {LANDING_KEY: key, "landing/rows": result.verdict.rows,
                                   "landing/held_back": not result.verdict.passed}
    if version is not None:
        metadata[LANDING_VERSION] = version
    if result.extra_columns:
        metadata["landing/extra_columns"] = dg.MetadataValue.json(result.extra_columns)
    if result.nulled:
        metadata["landing/nulled_readings"] = dg.MetadataValue.json({n.column: n.count for n in result.nulled})
    return metadata


@dataclass(frozen=True)
class _Landing:
    """A landing dataset and the table it becomes: a file a day (partitioned) or one reference file."""

    table: Table
    contract: Contract
    description: str
    """The asset's catalog description (written as a docstring)."""

    @property
    def daily(self) -> bool:
        return self.contract.date_columns is not None

    def key_of(self, partition: str) -> str:
        """Where the landing file of ``partition`` lies (a reference table has one, whatever the partition)."""
        if self.daily:
            return landing_key(self.contract.dataset, partition)
        return reference_key(self.contract.dataset)


def _ingest(
    context: dg.AssetExecutionContext,
    storage: LakeStorage,
    config: LandingConfig,
    landing: _Landing,
    partitions: list[str],
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """Ingest ``partitions`` of one landing dataset; keep what was left out; yield the output and its check."""
    results, versions = _validated(context, storage, config, landing, partitions)
    asset, contract = landing.table.value, landing.contract
    quarantined, nulled_reports = _keep_what_was_left_out(context, storage, contract, asset, results)
    # A day with no landing file keeps whatever it had; a day that failed its checks loses it.
    frames = {key: r.frame for key, r in results.items() if not r.missing}
    metadata = {
        "dagster/column_schema": _column_schema(contract),
        "partitions_held_back": dg.MetadataValue.json(sorted(quarantined)),
    }
    if landing.daily:
        for key in frames:
            context.add_asset_metadata(
                _landing_metadata(landing.key_of(key), versions.get(key), results[key]), partition_key=key
            )
        yield dg.Output(frames, metadata=metadata)
    else:
        yield _reference_output(landing, results, frames, versions, metadata)
    yield _check_result(asset, contract, results, quarantined, nulled_reports)


def _validated(
    context: dg.AssetExecutionContext,
    storage: LakeStorage,
    config: LandingConfig,
    landing: _Landing,
    partitions: list[str],
) -> tuple[dict, dict[str, str]]:
    """Each partition's landing file read, typed and validated, and the landing version read of each.

    A run requested for one landing version (by the sensor) reads exactly it: a file replaced since
    fails the run, nothing written.
    """
    from ml.ingestion import ingest_partitions

    expected = _expected_versions(context, partitions, landing.key_of)
    versions: dict[str, str] = {}

    def read(partition: str) -> bytes:
        data, versions[partition] = storage.read_versioned(landing.key_of(partition), expected.get(partition))
        return data

    try:
        results = ingest_partitions(
            partitions,
            landing.contract,
            read=read,
            source_of=lambda p: storage.uri(landing.key_of(p)),
            reject_extra_columns=config.reject_extra_columns,
        )
    except ObjectChanged as exc:
        raise dg.Failure(
            f"{landing.table}: {exc}. This run was requested for version {exc.expected} and ingests exactly "
            "that version or nothing: nothing was written. The landing sensor requests a new run for "
            "the new version.",
            metadata={"landing/file": exc.key, "expected_version": exc.expected, "found_version": str(exc.found)},
            allow_retries=False,
        ) from None
    return results, versions


def _reference_output(landing: _Landing, results: dict, frames: dict, versions: dict[str, str], metadata: dict) -> dg.Output:
    """A reference table's one output (None: held back); a missing landing file fails, changing nothing."""
    if results[ALL_ROWS].missing:
        raise dg.Failure(
            f"{landing.table}: {results[ALL_ROWS].verdict.error}; replay or upload it (nothing was changed)",
            allow_retries=False,
        )
    frame = frames[ALL_ROWS]
    metadata = {**metadata, **_landing_metadata(landing.key_of(ALL_ROWS), versions.get(ALL_ROWS), results[ALL_ROWS])}
    return dg.Output(frame, metadata={**metadata, "dagster/row_count": len(frame) if frame is not None else 0})


def _ingest_asset(landing: _Landing) -> dg.AssetsDefinition:
    """The asset that ingests ``landing``, guarded by its blocking contract check; a range of days is one step."""

    @dg.asset(
        name=landing.table.value,
        description=inspect.cleandoc(landing.description),
        partitions_def=daily_partitions if landing.daily else None,
        backfill_policy=dg.BackfillPolicy.single_run() if landing.daily else None,
        group_name="ingest",
        kinds={"pandas", "parquet"},
        check_specs=[_contract_check_spec(landing.table.value, landing.contract)],
        retry_policy=IO_RETRY,
    )
    def ingested(context: dg.AssetExecutionContext, storage: LakeStorage, config: LandingConfig):
        partitions = list(context.partition_keys) if landing.daily else [ALL_ROWS]
        yield from _ingest(context, storage, config, landing, partitions)

    return derived_code_version(ingested)


raw_flights = _ingest_asset(_Landing(Table.RAW_FLIGHTS, FLIGHTS, """Flights of one day, typed and validated.

    Read from `landing/flights/date=YYYY-MM-DD.csv`, typed by the flights contract (`ml/contracts.py`)
    and written as one Parquet file per day. A day that fails the blocking `landing_contract` check
    is quarantined instead (`quarantine/flights/<day>/`) and no Parquet exists for it.
    A range of days runs as one step.
    """))

raw_weather = _ingest_asset(_Landing(Table.RAW_WEATHER, WEATHER, """Hourly weather at EWR, JFK and LGA for one day, typed and validated.

    Read from `landing/weather/date=YYYY-MM-DD.csv`; physical ranges are checked (a 1,048 mph wind
    is a sensor fault, not weather). Days that fail the blocking check are quarantined.
    """))

planes = _ingest_asset(_Landing(Table.PLANES, PLANES, """Aircraft registry by tail number (build year, maker, model, engines, seats).

    Reference table from `landing/reference/planes.csv`.
    """))

airports = _ingest_asset(_Landing(Table.AIRPORTS, AIRPORTS, """Airports by FAA code with location, altitude and time zone.

    Reference table from `landing/reference/airports.csv`.
    """))
