"""Great Expectations 1.x suites built from the data contracts, run over many partitions at once.

A range of daily partitions is validated in one GX run (a ``partition`` column is added and the
unique key includes it); each unexpected row is traced back to its partition through GX's
``unexpected_index_list``. One run per range instead of one per day keeps a year's backfill cheap.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ml.contracts import ALL_ROWS, Contract

VERSION = "1"
"""Bump when what this module computes changes: the assets built on it become stale (assets/versions.py)."""

PARTITION_COLUMN = "partition"
# GX compares pandas extension dtypes by class name; tz-aware datetimes have no name it can match,
# so their type is guaranteed by the parser alone.
GX_TYPE_NAMES = {
    "Int16": "Int16Dtype",
    "Int32": "Int32Dtype",
    "float64": "float64",
    "string": "StringDtype",
}


@dataclass
class ExpectationFailure:
    """One expectation that one partition did not meet."""

    expectation: str
    column: str | None
    kwargs: dict[str, Any]
    unexpected_count: int
    sample_values: list[Any]
    rows: list[int] = field(default_factory=list)  # positions in the partition's frame

    def describe(self) -> str:
        target = f" on {self.column!r}" if self.column else ""
        shown = {k: v for k, v in self.kwargs.items() if k not in {"column", "batch_id"}}
        return (
            f"{self.expectation}{target} {shown}: {self.unexpected_count} unexpected, "
            f"e.g. {self.sample_values[:5]}"
        )


@dataclass
class PartitionVerdict:
    """The outcome of validating one partition: passed, or why not."""

    partition: str
    rows: int
    failures: list[ExpectationFailure] = field(default_factory=list)
    error: str | None = None  # the file could not be parsed at all

    @property
    def passed(self) -> bool:
        return self.error is None and not self.failures

    def reasons(self) -> list[str]:
        return [self.error] if self.error else [f.describe() for f in self.failures]


def _validation_view(frames: Mapping[str, pd.DataFrame], contract: Contract) -> pd.DataFrame:
    combined = pd.concat(
        [f.assign(**{PARTITION_COLUMN: key}) for key, f in frames.items()], ignore_index=True
    )
    for col in contract.columns:
        if col.hhmm:
            combined[f"{col.name}__minutes"] = combined[col.name] % 100
    if contract.date_columns and set(frames) != {ALL_ROWS}:
        y, m, d = (combined[c].astype("Int64") for c in contract.date_columns)
        stamp = (y * 10000 + m * 100 + d).astype("string")
        expected = combined[PARTITION_COLUMN].str.replace("-", "", regex=False)
        combined["date_matches_partition"] = (stamp == expected).fillna(False).astype(bool)
    return combined


def _expectations(contract: Contract, view_columns: list[str]) -> list:
    import great_expectations.expectations as gxe

    out: list = [gxe.ExpectTableRowCountToBeBetween(min_value=1)]
    for col in contract.columns:
        out.append(gxe.ExpectColumnToExist(column=col.name))
        if col.dtype in GX_TYPE_NAMES:
            out.append(
                gxe.ExpectColumnValuesToBeInTypeList(
                    column=col.name, type_list=[GX_TYPE_NAMES[col.dtype]]
                )
            )
        if not col.nullable:
            out.append(gxe.ExpectColumnValuesToNotBeNull(column=col.name))
        if col.min_value is not None or col.max_value is not None:
            out.append(
                gxe.ExpectColumnValuesToBeBetween(
                    column=col.name, min_value=col.min_value, max_value=col.max_value
                )
            )
        if col.value_set is not None:
            out.append(gxe.ExpectColumnValuesToBeInSet(column=col.name, value_set=list(col.value_set)))
        if col.regex is not None:
            out.append(gxe.ExpectColumnValuesToMatchRegex(column=col.name, regex=col.regex))
        if col.hhmm:
            out.append(
                gxe.ExpectColumnValuesToBeBetween(
                    column=f"{col.name}__minutes", min_value=0, max_value=59
                )
            )
    out.append(
        gxe.ExpectCompoundColumnsToBeUnique(column_list=[PARTITION_COLUMN, *contract.key])
    )
    if "date_matches_partition" in view_columns:
        out.append(
            gxe.ExpectColumnValuesToBeInSet(column="date_matches_partition", value_set=[True])
        )
    return out


@functools.lru_cache(maxsize=None)
def _validation_definition(contract: Contract, view_columns: tuple[str, ...]):
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    name = f"{contract.dataset}_contract"
    batch = (
        ctx.data_sources.add_pandas(f"{name}_source")
        .add_dataframe_asset(contract.dataset)
        .add_batch_definition_whole_dataframe("whole_frame")
    )
    # Built whole and added once: suite.add_expectation re-serializes the suite each time (~40 ms).
    suite = ctx.suites.add(
        gx.ExpectationSuite(name=name, expectations=_expectations(contract, list(view_columns)))
    )
    return ctx.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))


def suite_size(contract: Contract, daily: bool = True) -> int:
    """How many expectations the contract's suite holds (for a single day when ``daily``)."""
    sample = pd.DataFrame({c.name: pd.Series(dtype=c.dtype) for c in contract.columns})
    key = "2013-01-01" if daily and contract.date_columns else ALL_ROWS
    view = _validation_view({key: sample}, contract)
    return len(_expectations(contract, list(view.columns)))


def validate_partitions(
    frames: Mapping[str, pd.DataFrame], contract: Contract
) -> dict[str, PartitionVerdict]:
    """Validate typed partitions (``{partition_key: frame}``) against the contract's suite.

    Frames must already have the contract's columns (see ``ml.parsing``). Use the key ``"all"``
    for an unpartitioned table.
    """
    if not frames:
        return {}
    verdicts = {key: PartitionVerdict(partition=key, rows=len(f)) for key, f in frames.items()}
    non_empty = {k: f for k, f in frames.items() if len(f)}
    for key in frames.keys() - non_empty.keys():
        verdicts[key].error = f"{contract.dataset} {key}: no rows"
    if not non_empty:
        return verdicts

    view = _validation_view(non_empty, contract)
    offsets = view.groupby(PARTITION_COLUMN, sort=False).cumcount().to_numpy()
    definition = _validation_definition(contract, tuple(view.columns))
    result = definition.run(
        batch_parameters={"dataframe": view}, result_format={"result_format": "COMPLETE"}
    )
    expected = len(definition.suite.expectations)
    if len(result.results) != expected:
        raise RuntimeError(
            f"{contract.dataset}: GX evaluated {len(result.results)} of {expected} expectations"
        )
    for outcome in result.results:
        if outcome.success:
            continue
        config = outcome.expectation_config
        kwargs = dict(config.kwargs)
        details = outcome.result or {}
        indices = details.get("unexpected_index_list")
        if indices is None:  # a table-level expectation: it fails every partition in the run
            blamed = {key: [] for key in non_empty}
        else:
            blamed: dict[str, list[int]] = {}
            for idx in indices:
                position = int(idx if not isinstance(idx, dict) else idx.get("index", 0))
                blamed.setdefault(view[PARTITION_COLUMN].iat[position], []).append(position)
        for key, positions in blamed.items():
            column = kwargs.get("column") or ",".join(kwargs.get("column_list", [])) or None
            values = (
                view.loc[positions, column].head(5).tolist()
                if positions and kwargs.get("column")
                else []
            )
            verdicts[key].failures.append(
                ExpectationFailure(
                    expectation=config.type,
                    column=column,
                    kwargs={k: v for k, v in kwargs.items() if k != "batch_id"},
                    unexpected_count=len(positions) or int(details.get("unexpected_count") or 0),
                    sample_values=values,
                    rows=[int(offsets[p]) for p in positions[:5]],
                )
            )
    return verdicts
