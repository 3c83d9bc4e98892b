"""Landing file → typed, validated partition: the whole decision, free of any orchestrator."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pandas as pd

from ml.contracts import Contract
from ml.expectations import ExpectationFailure, PartitionVerdict, validate_partitions
from ml.parsing import LandingFileError, ParsedFile, extra_columns, parse_frames, read_landing_csv

VERSION = "2"
"""Bump when what this module computes changes: the assets built on it become stale (assets/versions.py)."""

ALL_NULL_EXPECTATION = "column_not_entirely_null"


@dataclass(frozen=True)
class NulledReadings:
    """Impossible readings of one column of one partition, set to null in the raw table.

    ``examples`` are the first rows (key columns and the value as delivered), for the quarantine
    report and the one line that tells people about it.
    """

    column: str
    count: int
    min_value: float | None
    max_value: float | None
    examples: list[dict]

    def describe(self) -> str:
        shown = ", ".join(
            f"{e[self.column]:g} ({' '.join(str(v) for k, v in e.items() if k != self.column)})" for e in self.examples[:3]
        )
        low = "-inf" if self.min_value is None else f"{self.min_value:g}"
        high = "inf" if self.max_value is None else f"{self.max_value:g}"
        return f"{self.count} {self.column} reading(s) outside [{low}, {high}] set to null: {shown}"


def null_impossible_readings(
    frame: pd.DataFrame, contract: Contract, examples: int = 5
) -> tuple[pd.DataFrame, list[NulledReadings]]:
    """Null each sensor reading outside its physical range, column by column, where few enough rows have one.

    A column's impossible readings are nulled when they are at most ``contract.max_nulled_share``
    of the partition's rows (one faulty report); above it they stay, and the range expectation
    holds the partition back whole (a broken feed). Only ``Column.reading`` columns qualify: a key
    or a schedule out of range is never a single faulty report.
    """
    limit = math.floor(contract.max_nulled_share * len(frame) + 1e-9)
    if limit == 0:
        return frame, []
    nulled: list[NulledReadings] = []
    out = frame
    key = [c for c in contract.key if c in frame.columns]
    for col in contract.columns:
        if not col.reading or (col.min_value is None and col.max_value is None):
            continue
        values = frame[col.name]
        low = -math.inf if col.min_value is None else col.min_value
        high = math.inf if col.max_value is None else col.max_value
        bad = (values.notna() & ~values.between(low, high)).to_numpy(dtype=bool)
        count = int(bad.sum())
        if count == 0 or count > limit:
            continue
        if out is frame:
            out = frame.copy()
        rows = frame.loc[bad, [*key, col.name]].head(examples)
        nulled.append(NulledReadings(
            column=col.name, count=count, min_value=col.min_value, max_value=col.max_value,
            examples=[{k: _plain(v) for k, v in row.items()} for row in rows.to_dict("records")],
        ))
        out.loc[bad, col.name] = None
    return out, nulled


def _plain(value):
    """A JSON-friendly scalar: timestamps as ISO text, numpy numbers as Python's."""
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value.item() if hasattr(value, "item") else value


@dataclass
class IngestedPartition:
    """A partition's verdict and, when the file could be typed at all, its typed rows."""

    typed: pd.DataFrame | None
    verdict: PartitionVerdict
    source: str
    landing_bytes: bytes | None = None
    missing: bool = False  # no landing file at all (as opposed to a bad one)
    extra_columns: list[str] = field(default_factory=list)  # in the file, not in the contract: not ingested
    nulled: list[NulledReadings] = field(default_factory=list)  # impossible readings set to null, row by row

    @property
    def frame(self) -> pd.DataFrame | None:
        """The rows to publish: only a partition that passed every expectation has any."""
        return self.typed if self.verdict.passed else None


def _type_failures(parsed: ParsedFile) -> list[ExpectationFailure]:
    return [
        ExpectationFailure(
            expectation=f"values_parse_as_{p.dtype}",
            column=p.column,
            kwargs={"dtype": p.dtype},
            unexpected_count=p.count,
            sample_values=p.sample,
            rows=p.rows,
        )
        for p in parsed.type_problems
    ]


def _all_null_failures(frame: pd.DataFrame, contract: Contract) -> list[ExpectationFailure]:
    """Nullable columns that hold no value at all in a partition, unless the contract allows it."""
    if frame.empty:
        return []
    return [
        ExpectationFailure(
            expectation=ALL_NULL_EXPECTATION, column=c.name, kwargs={}, unexpected_count=len(frame), sample_values=[]
        )
        for c in contract.columns
        if c.nullable and not c.may_be_all_null and frame[c.name].isna().all()
    ]


def ingest_partitions(
    partitions: Iterable[str],
    contract: Contract,
    read: Callable[[str], bytes],
    source_of: Callable[[str], str],
    reject_extra_columns: bool = False,
) -> dict[str, IngestedPartition]:
    """Read, type and validate each partition; only those that pass every expectation keep a frame.

    ``read(partition)`` returns the landing bytes (FileNotFoundError when absent; any other
    error propagates: the caller cannot trust the run); ``source_of(partition)`` names the file in
    messages. Files are read one by one (a broken file fails alone); typing and validation run
    once over all of them; impossible sensor readings are nulled first where few enough rows have
    one (``null_impossible_readings``). Columns beyond the contract are listed in ``extra_columns`` (or the
    partition is held back when ``reject_extra_columns``).
    """
    out: dict[str, IngestedPartition] = {}
    raws: dict[str, pd.DataFrame] = {}
    landed: dict[str, bytes] = {}
    extras: dict[str, list[str]] = {}
    for partition in partitions:
        source = source_of(partition)
        try:
            data = read(partition)
        except FileNotFoundError:
            out[partition] = IngestedPartition(
                None, PartitionVerdict(partition, 0, error=f"{source}: no such landing file"), source, missing=True
            )
            continue
        try:
            raws[partition] = read_landing_csv(data, contract, source, reject_extra_columns)
            landed[partition] = data
            extras[partition] = extra_columns(raws[partition], contract)
        except LandingFileError as exc:
            out[partition] = IngestedPartition(None, PartitionVerdict(partition, 0, error=str(exc)), source, data)

    parsed = parse_frames(raws, contract, {p: source_of(p) for p in raws})
    typed: dict[str, pd.DataFrame] = {}
    for partition, result in parsed.items():
        verdict = PartitionVerdict(partition, len(result.frame))
        frame, nulled = result.frame, []
        if not result.ok:
            verdict.failures = _type_failures(result)
        else:
            frame, nulled = null_impossible_readings(result.frame, contract)
            typed[partition] = frame
        out[partition] = IngestedPartition(
            frame, verdict, result.source, landed[partition], extra_columns=extras[partition], nulled=nulled
        )
    for partition, verdict in validate_partitions(typed, contract).items():
        verdict.failures.extend(_all_null_failures(typed[partition], contract))
        out[partition].verdict = verdict
    return out


def bad_rows_sample(ingested: IngestedPartition, limit: int = 5) -> pd.DataFrame:
    """The rows named by the failed expectations (at most ``limit``), for people to look at."""
    frame = ingested.typed
    if frame is None:
        return pd.DataFrame()
    positions = sorted({r for f in ingested.verdict.failures for r in f.rows if r < len(frame)})
    return frame.iloc[positions[:limit]]
