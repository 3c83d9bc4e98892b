"""Turn a landing CSV into a typed DataFrame, or say exactly what is wrong with it."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

import pandas as pd

from ml.contracts import Contract

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
        whole = numbers.where(numbers.isna() | (numbers == numbers.round()))
        return whole.astype(dtype)
    if dtype == "float64":
        return pd.to_numeric(raw, errors="coerce").astype("float64")
    if dtype.startswith("datetime64"):
        return pd.to_datetime(raw, errors="coerce", utc=True, format="ISO8601")
    return raw.astype("string").str.strip()


def parse_frame(raw: pd.DataFrame, contract: Contract, source: str) -> ParsedFile:
    """Type a frame of strings by the contract; cells that do not parse become problems, not NaN."""
    typed = {}
    problems = []
    for col in contract.columns:
        values = raw[col.name]
        coerced = _coerce(values, col.dtype)
        bad = values.notna() & coerced.isna()
        if bad.any():
            problems.append(
                TypeProblem(
                    column=col.name,
                    dtype=col.dtype,
                    count=int(bad.sum()),
                    sample=values[bad].astype(str).head(5).tolist(),
                    rows=[int(i) for i in bad[bad].index[:5]],
                )
            )
        typed[col.name] = coerced
    return ParsedFile(frame=pd.DataFrame(typed), type_problems=problems, source=source)


def parse_landing_csv(data: bytes, contract: Contract, source: str) -> ParsedFile:
    """Read one landing CSV: raise LandingFileError for unreadable files, report bad cells."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LandingFileError(f"{source}: not UTF-8 text ({exc})") from None
    if not text.strip():
        raise LandingFileError(f"{source}: empty file (no header, no rows)")
    header = _check_shape(text, source)
    _check_columns(header, contract, source)
    raw = pd.read_csv(
        io.StringIO(text), dtype=str, keep_default_na=False, na_values=NA_VALUES
    )
    raw.columns = [c.strip() for c in raw.columns]
    if raw.empty:
        raise LandingFileError(f"{source}: header only, no rows")
    return parse_frame(raw, contract, source)
