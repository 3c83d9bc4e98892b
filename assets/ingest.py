"""Ingestion: landing CSVs → typed Parquet, guarded by blocking Great Expectations checks."""


import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict

import dagster as dg

from assets.partitions import daily_partitions
from assets.policies import IO_RETRY
from assets.versions import code_version
from ml.contracts import AIRPORTS, ALL_ROWS, FLIGHTS, PLANES, WEATHER, Contract
from ml.landing import landing_key, reference_key
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


def _ingest(
    context: dg.AssetExecutionContext,
    storage: LakeStorage,
    config: LandingConfig,
    contract: Contract,
    asset: str,
    partitions: Iterable[str],
    key_of,
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    from ml.ingestion import ingest_partitions

    partitions = list(partitions)
    expected = _expected_versions(context, partitions, key_of)
    versions: dict[str, str] = {}

    def read(partition: str) -> bytes:
        data, versions[partition] = storage.read_versioned(key_of(partition), expected.get(partition))
        return data

    try:
        results = ingest_partitions(
            partitions,
            contract,
            read=read,
            source_of=lambda p: storage.uri(key_of(p)),
            reject_extra_columns=config.reject_extra_columns,
        )
    except ObjectChanged as exc:
        raise dg.Failure(
            f"{asset}: {exc}. This run was requested for version {exc.expected} and ingests exactly "
            "that version or nothing: nothing was written. The landing sensor requests a new run for "
            "the new version.",
            metadata={"landing/file": exc.key, "expected_version": exc.expected, "found_version": str(exc.found)},
            allow_retries=False,
        ) from None
    quarantined, nulled_reports = _keep_what_was_left_out(context, storage, contract, asset, results)
    # A day with no landing file keeps whatever it had; a day that failed its checks loses it.
    frames = {key: r.frame for key, r in results.items() if not r.missing}
    metadata = {
        "dagster/column_schema": _column_schema(contract),
        "partitions_held_back": dg.MetadataValue.json(sorted(quarantined)),
    }
    if not contract.date_columns:
        if results[ALL_ROWS].missing:
            raise dg.Failure(
                f"{asset}: {results[ALL_ROWS].verdict.error}; replay or upload it (nothing was changed)",
                allow_retries=False,
            )
        frame = frames[ALL_ROWS]
        metadata.update(_landing_metadata(key_of(ALL_ROWS), versions.get(ALL_ROWS), results[ALL_ROWS]))
        yield dg.Output(frame, metadata={**metadata, "dagster/row_count": len(frame) if frame is not None else 0})
    else:
        for key in frames:
            context.add_asset_metadata(
                _landing_metadata(key_of(key), versions.get(key), results[key]), partition_key=key
            )
        yield dg.Output(frames, metadata=metadata)
    yield _check_result(asset, contract, results, quarantined, nulled_reports)


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="ingest",
    kinds={"pandas", "parquet"},
    check_specs=[_contract_check_spec("raw_flights", FLIGHTS)],
    code_version=code_version("ml.contracts", "ml.parsing", "ml.expectations", "ml.ingestion"),
    retry_policy=IO_RETRY,
)
def raw_flights(context: dg.AssetExecutionContext, storage: LakeStorage, config: LandingConfig):
    """Flights of one day, typed and validated.

    Read from `landing/flights/date=YYYY-MM-DD.csv`, typed by the flights contract (`ml/contracts.py`)
    and written as one Parquet file per day. A day that fails the blocking `landing_contract` check
    is quarantined instead (`quarantine/flights/<day>/`) and no Parquet exists for it.
    A range of days runs as one step.
    """
    yield from _ingest(
        context, storage, config, FLIGHTS, "raw_flights", context.partition_keys,
        lambda p: landing_key("flights", p),
    )


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="ingest",
    kinds={"pandas", "parquet"},
    check_specs=[_contract_check_spec("raw_weather", WEATHER)],
    code_version=code_version("ml.contracts", "ml.parsing", "ml.expectations", "ml.ingestion"),
    retry_policy=IO_RETRY,
)
def raw_weather(context: dg.AssetExecutionContext, storage: LakeStorage, config: LandingConfig):
    """Hourly weather at EWR, JFK and LGA for one day, typed and validated.

    Read from `landing/weather/date=YYYY-MM-DD.csv`; physical ranges are checked (a 1,048 mph wind
    is a sensor fault, not weather). Days that fail the blocking check are quarantined.
    """
    yield from _ingest(
        context, storage, config, WEATHER, "raw_weather", context.partition_keys,
        lambda p: landing_key("weather", p),
    )


@dg.asset(
    group_name="ingest",
    kinds={"pandas", "parquet"},
    check_specs=[_contract_check_spec("planes", PLANES)],
    code_version=code_version("ml.contracts", "ml.parsing", "ml.expectations", "ml.ingestion"),
    retry_policy=IO_RETRY,
)
def planes(context: dg.AssetExecutionContext, storage: LakeStorage, config: LandingConfig):
    """Aircraft registry by tail number (build year, maker, model, engines, seats).

    Reference table from `landing/reference/planes.csv`.
    """
    yield from _ingest(context, storage, config, PLANES, "planes", [ALL_ROWS], lambda _: reference_key("planes"))


@dg.asset(
    group_name="ingest",
    kinds={"pandas", "parquet"},
    check_specs=[_contract_check_spec("airports", AIRPORTS)],
    code_version=code_version("ml.contracts", "ml.parsing", "ml.expectations", "ml.ingestion"),
    retry_policy=IO_RETRY,
)
def airports(context: dg.AssetExecutionContext, storage: LakeStorage, config: LandingConfig):
    """Airports by FAA code with location, altitude and time zone.

    Reference table from `landing/reference/airports.csv`.
    """
    yield from _ingest(context, storage, config, AIRPORTS, "airports", [ALL_ROWS], lambda _: reference_key("airports"))
