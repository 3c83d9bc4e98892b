"""Ingestion: landing CSVs → typed Parquet, guarded by blocking Great Expectations checks."""


import json
from collections.abc import Iterable, Iterator

import dagster as dg

from assets.partitions import daily_partitions
from assets.policies import IO_RETRY
from ml.contracts import AIRPORTS, ALL_ROWS, FLIGHTS, PLANES, WEATHER, Contract
from ml.landing import landing_key, reference_key
from resources.storage import LakeStorage

CONTRACT_CHECK = "landing_contract"
QUARANTINE_PREFIX = "quarantine"
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


def _column_schema(contract: Contract) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(c.name, c.dtype, constraints=dg.TableColumnConstraints(nullable=c.nullable))
            for c in contract.columns
        ]
    )


def _quarantine(storage: LakeStorage, contract: Contract, ingested) -> str:
    """Keep a rejected landing file and the reasons beside it; nothing is lost."""
    folder = f"{QUARANTINE_PREFIX}/{contract.dataset}/{ingested.verdict.partition}"
    if ingested.landing_bytes is not None:
        storage.write_bytes(f"{folder}/{ingested.source.rsplit('/', 1)[-1]}", ingested.landing_bytes)
    report = {"source": ingested.source, "reasons": ingested.verdict.reasons()}
    storage.write_bytes(f"{folder}/report.json", json.dumps(report, indent=2, default=str).encode())
    return storage.uri(folder)


def _check_result(
    asset: str, contract: Contract, results: dict, quarantined: dict[str, str]
) -> dg.AssetCheckResult:
    from ml.expectations import suite_size
    from ml.ingestion import bad_rows_sample

    failed = {key: r for key, r in results.items() if not r.verdict.passed}
    metadata: dict[str, object] = {
        "partitions_checked": len(results),
        "partitions_failed": len(failed),
        "expectations_per_partition": suite_size(contract, daily=contract.date_columns is not None),
    }
    if failed:
        shown = list(failed)[:_MAX_PARTITIONS_IN_METADATA]
        metadata["failed_partitions"] = dg.MetadataValue.json(
            {key: {"reasons": failed[key].verdict.reasons(), "quarantine": quarantined.get(key)} for key in shown}
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
        + "; ".join(f"{k}: {failed[k].verdict.reasons()[0]}" for k in list(failed)[:3])
    )
    return dg.AssetCheckResult(
        check_name=CONTRACT_CHECK,
        asset_key=asset,
        passed=not failed,
        metadata=metadata,
        description=description[:2000],
    )


def _ingest(
    context: dg.AssetExecutionContext,
    storage: LakeStorage,
    contract: Contract,
    asset: str,
    partitions: Iterable[str],
    key_of,
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    from ml.ingestion import ingest_partitions

    results = ingest_partitions(
        partitions,
        contract,
        read=lambda p: storage.read_bytes(key_of(p)),
        source_of=lambda p: storage.uri(key_of(p)),
    )
    quarantined = {}
    for key, result in results.items():
        if not result.verdict.passed:
            quarantined[key] = _quarantine(storage, contract, result)
            context.log.warning(f"{asset} {key} held back: {'; '.join(result.verdict.reasons())}")
    # A day with no landing file keeps whatever it had; a day that failed its checks loses it.
    frames = {key: r.frame for key, r in results.items() if not r.missing}
    metadata = {
        "dagster/column_schema": _column_schema(contract),
        "partitions_held_back": dg.MetadataValue.json(sorted(quarantined)),
    }
    if not contract.date_columns:
        if results[ALL_ROWS].missing:
            raise dg.Failure(f"{asset}: {results[ALL_ROWS].verdict.error}; replay or upload it (nothing was changed)", allow_retries=False)
        frame = frames[ALL_ROWS]
        yield dg.Output(frame, metadata={**metadata, "dagster/row_count": len(frame) if frame is not None else 0})
    else:
        yield dg.Output(frames, metadata=metadata)
    yield _check_result(asset, contract, results, quarantined)


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="ingest",
    kinds={"pandas", "parquet"},
    check_specs=[_contract_check_spec("raw_flights", FLIGHTS)],
    code_version="1",
    retry_policy=IO_RETRY,
)
def raw_flights(context: dg.AssetExecutionContext, storage: LakeStorage):
    """Flights of one day, typed and validated.

    Read from `landing/flights/date=YYYY-MM-DD.csv`, typed by the flights contract (`ml/contracts.py`)
    and written as one Parquet file per day. A day that fails the blocking `landing_contract` check
    is quarantined instead (`quarantine/flights/<day>/`) and no Parquet exists for it.
    A range of days runs as one step.
    """
    yield from _ingest(
        context, storage, FLIGHTS, "raw_flights", context.partition_keys,
        lambda p: landing_key("flights", p),
    )


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="ingest",
    kinds={"pandas", "parquet"},
    check_specs=[_contract_check_spec("raw_weather", WEATHER)],
    code_version="1",
    retry_policy=IO_RETRY,
)
def raw_weather(context: dg.AssetExecutionContext, storage: LakeStorage):
    """Hourly weather at EWR, JFK and LGA for one day, typed and validated.

    Read from `landing/weather/date=YYYY-MM-DD.csv`; physical ranges are checked (a 1,048 mph wind
    is a sensor fault, not weather). Days that fail the blocking check are quarantined.
    """
    yield from _ingest(
        context, storage, WEATHER, "raw_weather", context.partition_keys,
        lambda p: landing_key("weather", p),
    )


@dg.asset(
    group_name="ingest",
    kinds={"pandas", "parquet"},
    check_specs=[_contract_check_spec("planes", PLANES)],
    code_version="1",
    retry_policy=IO_RETRY,
)
def planes(context: dg.AssetExecutionContext, storage: LakeStorage):
    """Aircraft registry by tail number (build year, maker, model, engines, seats).

    Reference table from `landing/reference/planes.csv`.
    """
    yield from _ingest(context, storage, PLANES, "planes", [ALL_ROWS], lambda _: reference_key("planes"))


@dg.asset(
    group_name="ingest",
    kinds={"pandas", "parquet"},
    check_specs=[_contract_check_spec("airports", AIRPORTS)],
    code_version="1",
    retry_policy=IO_RETRY,
)
def airports(context: dg.AssetExecutionContext, storage: LakeStorage):
    """Airports by FAA code with location, altitude and time zone.

    Reference table from `landing/reference/airports.csv`.
    """
    yield from _ingest(context, storage, AIRPORTS, "airports", [ALL_ROWS], lambda _: reference_key("airports"))
