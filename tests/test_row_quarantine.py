"""ml.ingestion.null_impossible_readings: impossible sensor readings nulled row by row, up to a share."""

import pandas as pd
import pytest

from ml.contracts import Column, Contract
from ml.ingestion import null_impossible_readings

CONTRACT = Contract(
    dataset="sensor",
    columns=(Column("station", "string", nullable=False), Column("wind", "float64", min_value=0, max_value=200, reading=True),
             Column("code", "float64", min_value=0, max_value=9)),
    key=("station",),
    date_columns=None,
    max_nulled_share=0.1,
)


def _frame(winds, codes=None):
    return pd.DataFrame({"station": [f"s{i}" for i in range(len(winds))], "wind": winds,
                         "code": codes if codes is not None else [1.0] * len(winds)})


def test_a_reading_out_of_range_is_nulled_and_described():
    frame = _frame([10.0] * 19 + [1048.4])
    out, (nulled,) = null_impossible_readings(frame, CONTRACT)
    assert out["wind"].isna().tolist() == [False] * 19 + [True]
    assert frame["wind"].iloc[-1] == 1048.4, "the input frame is left as it was"
    assert (nulled.column, nulled.count, nulled.examples) == ("wind", 1, [{"station": "s19", "wind": 1048.4}])
    assert nulled.describe() == "1 wind reading(s) outside [0, 200] set to null: 1048.4 (s19)"


@pytest.mark.parametrize(("bad", "nulled"), [(2, True), (3, False)])
def test_more_than_the_share_is_left_for_the_range_check_to_hold_back(bad, nulled):
    frame = _frame([10.0] * (20 - bad) + [-5.0] * bad)  # 10 % of 20 rows: 2
    out, found = null_impossible_readings(frame, CONTRACT)
    assert bool(found) is nulled and int(out["wind"].isna().sum()) == (bad if nulled else 0)


def test_only_readings_are_nulled_and_missing_values_are_not_counted():
    frame = _frame([None] * 5 + [10.0] * 15, codes=[99.0] + [1.0] * 19)
    out, found = null_impossible_readings(frame, CONTRACT)
    assert found == [] and out["code"].iloc[0] == 99.0 and out is frame


def test_no_share_no_nulling():
    frame = _frame([10.0] * 19 + [1048.4])
    strict = Contract(dataset="x", columns=CONTRACT.columns, key=CONTRACT.key, date_columns=None)
    assert null_impossible_readings(frame, strict) == (frame, [])
