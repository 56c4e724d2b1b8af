"""Row-by-row validation of user OHLCV CSVs."""

from __future__ import annotations

from features.csv_import import parse_ohlcv_csv

GOOD = """Date,Open,High,Low,Close,Volume
2024-01-02,10,11,9,10.5,1000
2024-01-03,10.5,12,10,11,2000
"""


def test_good_file_becomes_canonical_bars() -> None:
    parsed = parse_ohlcv_csv(GOOD.encode("utf-8-sig"), "ACME", "import:acme.csv")
    assert parsed.ok
    assert parsed.bars["close"].tolist() == [10.5, 11.0]
    assert parsed.bars["ticker"].unique().tolist() == ["ACME"]
    assert str(parsed.bars["date"].iloc[0].date()) == "2024-01-02"


def test_close_only_file_keeps_ohlv_missing() -> None:
    parsed = parse_ohlcv_csv("date,close\n2024-01-02,5\n", "ACME", "s")
    assert parsed.ok
    assert parsed.bars[["open", "high", "low", "volume"]].isna().all().all()


def test_every_bad_row_is_reported_with_its_line_and_nothing_is_kept() -> None:
    bad = (
        "date,open,high,low,close,volume\n"
        "2024-13-01,1,2,1,1.5,10\n"  # line 2: bad date
        "2024-01-02,1,0.5,1,1,10\n"  # line 3: high < low
        "2024-01-03,-1,2,1,1,10\n"  # line 4: non-positive price
        "2024-01-04,1,2,1,1,10\n"
        "2024-01-04,1,2,1,1,10\n"  # line 6: duplicate date
        "2024-01-05,1,2,1,x,10\n"  # line 7: not a number
        "2024-01-08,1,2,1,3,10\n"  # line 8: close above high
    )
    parsed = parse_ohlcv_csv(bad, "ACME", "s")
    assert parsed.bars.empty
    by_line = {e.line: e for e in parsed.errors}
    assert set(by_line) == {2, 3, 4, 6, 7, 8}
    assert by_line[2].column == "date"
    assert "below low" in by_line[3].message
    assert "positive" in by_line[4].message
    assert "duplicate date" in by_line[6].message and "line 5" in by_line[6].message
    assert by_line[7].column == "close"
    assert "outside" in by_line[8].message


def test_header_problems_are_reported_on_line_one() -> None:
    parsed = parse_ohlcv_csv("when,price\n2024-01-02,1\n", "ACME", "s")
    assert {(e.line, e.column) for e in parsed.errors} == {(1, "date"), (1, "close")}
    partial = parse_ohlcv_csv("date,open,close\n2024-01-02,1,1\n", "ACME", "s")
    assert "open, high, low" in partial.errors[0].message


def test_empty_and_future_inputs_are_refused() -> None:
    assert not parse_ohlcv_csv("", "ACME", "s").ok
    assert not parse_ohlcv_csv("date,close\n", "ACME", "s").ok
    future = parse_ohlcv_csv("date,close\n2999-01-01,1\n", "ACME", "s")
    assert "future" in future.errors[0].message
