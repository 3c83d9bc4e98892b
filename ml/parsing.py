"""Turn a landing CSV into a typed DataFrame, or say exactly what is wrong with it."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ml.contracts import Contract

VERSION = "2"
"""Bump when what this module computes changes: the assets built on it become stale (assets/versions.py)."""

NA_VALUES = ["", "NA", "NaN", "nan", "null", "NULL"]
_INT_DTYPES = {"Int8", "Int16", "Int32", "Int64"}


class LandingFileError(ValueError):
    """A landing file that cannot be read as its contract says; the message names file and problem."""


@dataclass
class TypeProblem:
    """Cells of one column that do not parse as the contract's type."""

    column: str
    dtype: str
    count: int
    sample: list[str]
    rows: list[int] = field(default_factory=list)


@dataclass
class ParsedFile:
    """A landing file read against its contract."""

    frame: pd.DataFrame
    type_problems: list[TypeProblem]
    source: str

    @property
    def ok(self) -> bool:
        return not self.type_problems


def _check_shape(text: str, source: str) -> list[str]:
    """Reject empty, headerless and ragged (e.g. truncated) files before pandas guesses."""
    rows = csv.reader(io.StringIO(text))
    try:
        header = next(rows)
    except StopIteration:
        raise LandingFileError(f"{source}: empty file (no header, no rows)") from None
    except csv.Error as exc:
        raise LandingFileError(f"{source}: not a readable CSV: {exc}") from None
    width = len(header)
    try:
        for line_no, row in enumerate(rows, start=2):
            if row and len(row) != width:
                raise LandingFileError(
                    f"{source}: line {line_no} has {len(row)} fields, the header has {width} "
                    "(truncated or malformed file)"
                )
    except csv.Error as exc:
        raise LandingFileError(f"{source}: not a readable CSV: {exc}") from None
    return [h.strip() for h in header]


def _check_columns(header: list[str], contract: Contract, source: str) -> None:
    missing = [c for c in contract.names if c not in header]
    duplicated = sorted({h for h in header if header.count(h) > 1})
    if missing or duplicated:
        unexpected = [h for h in header if h not in contract.names]
        parts = []
        if missing:
            parts.append(f"column(s) {missing} missing")
        if unexpected:
            parts.append(f"unexpected column(s) {unexpected} (renamed?)")
        if duplicated:
            parts.append(f"duplicated column(s) {duplicated}")
        raise LandingFileError(
            f"{source}: {'; '.join(parts)}; expected {list(contract.names)}"
        )


def _coerce(raw: pd.Series, dtype: str) -> pd.Series:
    if dtype in _INT_DTYPES:
        numbers = pd.to_numeric(raw, errors="coerce")
        limits = np.iinfo(dtype.lower())
        fits = (numbers == numbers.round()) & numbers.between(limits.min, limits.max)
        return numbers.where(numbers.isna() | fits).astype(dtype)
    if dtype == "float64":
        numbers = pd.to_numeric(raw, errors="coerce").astype("float64")
        return numbers.where(np.isfinite(numbers))  # "inf" is no measurement: a type problem
    if dtype.startswith("datetime64"):
        return pd.to_datetime(raw, errors="coerce", utc=True, format="ISO8601")
    return raw.astype("string").str.strip()


def parse_frames(raws: Mapping[str, pd.DataFrame], contract: Contract, sources: Mapping[str, str]) -> dict[str, ParsedFile]:
    """Type many frames of strings at once (one vectorised pass per column, not one per file).

    Cells that do not parse become ``TypeProblem``s of their own partition, never silent NaN.
    """
    if not raws:
        return {}
    combined = pd.concat(
        [raw[list(contract.names)] for raw in raws.values()],
        keys=list(raws),
        names=["partition", "row"],
    )
    part_index = combined.index.get_level_values("partition")
    row_index = combined.index.get_level_values("row")
    typed = {}
    problems: dict[str, list[TypeProblem]] = {key: [] for key in raws}
    for col in contract.columns:
        values = combined[col.name]
        coerced = _coerce(values, col.dtype)
        typed[col.name] = coerced
        bad = (values.notna() & coerced.isna()).to_numpy()
        if bad.any():
            bad_values = values[bad].astype(str)
            bad_parts = part_index[bad]
            bad_rows = row_index[bad]
            for key in pd.unique(bad_parts):
                mine = bad_parts == key
                problems[key].append(
                    TypeProblem(
                        column=col.name,
                        dtype=col.dtype,
                        count=int(mine.sum()),
                        sample=bad_values[mine].head(5).tolist(),
                        rows=[int(r) for r in bad_rows[mine][:5]],
                    )
                )
    frame = pd.DataFrame(typed)
    out = {}
    for key, part in frame.groupby(level="partition", sort=False):
        out[key] = ParsedFile(
            frame=part.reset_index(drop=True), type_problems=problems[key], source=sources[key]
        )
    return out


def parse_frame(raw: pd.DataFrame, contract: Contract, source: str) -> ParsedFile:
    """Type one frame of strings by the contract."""
    return parse_frames({source: raw}, contract, {source: source})[source]


def parse_landing_strings(raw: pd.DataFrame, contract: Contract, source: str) -> ParsedFile:
    """``parse_frame`` of cells as a landing file spells them: ``NA`` and the other ``NA_VALUES`` are missing,
    as ``read_landing_csv`` reads them (the live path types events' fields this way)."""
    return parse_frame(raw.where(~raw.isin(NA_VALUES)), contract, source)


_COMPRESSED = {
    b"\x1f\x8b": "gzip-compressed",
    b"PK\x03\x04": "a zip archive",
    b"BZh": "bzip2-compressed",
    b"\xfd7zXZ\x00": "xz-compressed",
    b"\x28\xb5\x2f\xfd": "zstd-compressed",
}
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def _decode(data: bytes, source: str) -> str:
    """UTF-8 text, with or without the byte-order mark Excel and Windows tools write first."""
    for magic, what in _COMPRESSED.items():
        if data.startswith(magic):
            raise LandingFileError(
                f"{source}: {what}, not CSV text; decompress it and deliver the plain .csv under the same name"
            )
    if data.startswith(_UTF16_BOMS):
        raise LandingFileError(f"{source}: not UTF-8 text (UTF-16, e.g. Excel's 'Unicode text'); export it as CSV UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LandingFileError(f"{source}: not UTF-8 text ({exc}); export it as CSV UTF-8") from None


def extra_columns(raw: pd.DataFrame, contract: Contract) -> list[str]:
    """Columns of a landing file that its contract does not name (they are not ingested)."""
    return [c for c in raw.columns if c not in contract.names]


def read_landing_csv(
    data: bytes, contract: Contract, source: str, reject_extra_columns: bool = False
) -> pd.DataFrame:
    """Read one landing CSV as strings; raise LandingFileError when it cannot be read as the contract says.

    Columns beyond the contract are kept in the frame for the caller to report (``extra_columns``),
    or rejected when ``reject_extra_columns``.
    """
    text = _decode(data, source)
    if not text.strip():
        raise LandingFileError(f"{source}: empty file (no header, no rows)")
    header = _check_shape(text, source)
    _check_columns(header, contract, source)
    unexpected = [h for h in header if h not in contract.names]
    if unexpected and reject_extra_columns:
        raise LandingFileError(
            f"{source}: unexpected column(s) {unexpected} and extra columns are rejected "
            "(reject_extra_columns); remove them, or add them to the contract"
        )
    raw = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=NA_VALUES)
    raw.columns = [c.strip() for c in raw.columns]
    if raw.empty:
        raise LandingFileError(f"{source}: header only, no rows")
    return raw


def parse_landing_csv(data: bytes, contract: Contract, source: str) -> ParsedFile:
    """Read and type one landing CSV: LandingFileError for unreadable files, problems for bad cells."""
    return parse_frame(read_landing_csv(data, contract, source), contract, source)
