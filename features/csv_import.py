"""Validate a user's OHLCV CSV row by row; report every problem with its line number.

Accepted header (case-insensitive, any order): `date`, `close`, and optionally `open`, `high`,
`low` (all three or none) and `volume`. Dates are ISO (`2024-01-31`). A file with any error
yields no bars at all, so an import is all-or-nothing.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime

import pandas as pd

from features.bars import canonical

MAX_ROWS = 200_000
MAX_ERRORS = 200  # enough to fix a file; more would only flood the response
_ALIASES = {"timestamp": "date", "adj close": "close", "adj_close": "close"}
_OHLC = ("open", "high", "low")


@dataclass(frozen=True)
class RowError:
    line: int  # 1-based line in the file; the header is line 1
    column: str | None
    message: str


@dataclass(frozen=True)
class ParsedBars:
    bars: pd.DataFrame
    errors: list[RowError]

    @property
    def ok(self) -> bool:
        return not self.errors


def _header(fields: list[str]) -> tuple[dict[str, int], list[RowError]]:
    names = [_ALIASES.get(f.strip().lower(), f.strip().lower()) for f in fields]
    index = {name: i for i, name in enumerate(names) if name}
    errors = []
    for required in ("date", "close"):
        if required not in index:
            errors.append(RowError(1, required, f"missing required column {required!r}"))
    present = [c for c in _OHLC if c in index]
    if present and len(present) != len(_OHLC):
        errors.append(RowError(1, None, "give all of open, high, low or none of them"))
    if len(names) != len(set(names)):
        errors.append(RowError(1, None, "duplicate column names in header"))
    return index, errors


def _parse_date(raw: str) -> date:
    text = raw.strip()
    parsed = datetime.fromisoformat(text) if len(text) > 10 else date.fromisoformat(text)
    if isinstance(parsed, datetime):
        if parsed.time() != datetime.min.time():
            raise ValueError("daily bars need a date, not a time of day")
        parsed = parsed.date()
    if parsed > date.today():
        raise ValueError("date is in the future")
    return parsed


def _parse_number(raw: str, column: str) -> float | None:
    text = raw.strip()
    if text == "":
        if column == "close":
            raise ValueError("close is required")
        return None
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    if column == "volume" and value < 0:
        raise ValueError("volume cannot be negative")
    if column != "volume" and value <= 0:
        raise ValueError("price must be positive")
    return value


def _check_bar(line: int, bar: dict[str, float | None]) -> list[RowError]:
    o, h, low, c = (bar.get(k) for k in ("open", "high", "low", "close"))
    if h is None or low is None or c is None:
        return []
    if h < low:
        return [RowError(line, "high", f"high {h} is below low {low}")]
    errors = []
    for name, value in (("open", o), ("close", c)):
        if value is not None and not low <= value <= h:
            errors.append(RowError(line, name, f"{name} {value} is outside [low {low}, high {h}]"))
    return errors


def _parse_row(line: int, row: list[str], index: dict[str, int]) -> tuple[dict, list[RowError]]:
    errors: list[RowError] = []
    bar: dict = {}
    if len(row) < len(index):
        return bar, [RowError(line, None, f"expected {len(index)} fields, got {len(row)}")]
    try:
        bar["date"] = _parse_date(row[index["date"]])
    except ValueError as exc:
        errors.append(RowError(line, "date", f"bad date {row[index['date']]!r}: {exc}"))
    for column in ("open", "high", "low", "close", "volume"):
        if column in index:
            try:
                bar[column] = _parse_number(row[index[column]], column)
            except ValueError as exc:
                errors.append(RowError(line, column, f"bad {column} {row[index[column]]!r}: {exc}"))
    if not errors:
        errors.extend(_check_bar(line, bar))
    return bar, errors


def csv_rows(text: str) -> Iterator[tuple[int, list[str]]]:
    """(line, cells) of each record, the line being where the record starts. A malformed file
    (a bare carriage return in an unquoted field, an unterminated quote, a giant field) raises
    CsvSyntaxError naming the line, instead of the csv module's own error."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise CsvSyntaxError(start, str(exc)) from exc
        yield start, row


class CsvSyntaxError(ValueError):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


def decode_csv(content: str | bytes) -> str:
    """The file as text; ValueError when it is not UTF-8 or holds NUL bytes."""
    try:
        text = content.decode("utf-8-sig") if isinstance(content, bytes) else content
    except UnicodeDecodeError as exc:
        raise ValueError("the file is not UTF-8 text") from exc
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise CsvSyntaxError(line, "the file holds a NUL character")
    return text


def parse_ohlcv_csv(content: str | bytes, ticker: str, source: str) -> ParsedBars:
    """Parse and validate every row; `bars` is empty whenever `errors` is not."""
    try:
        records = list(csv_rows(decode_csv(content)))
    except CsvSyntaxError as exc:
        return ParsedBars(pd.DataFrame(), [RowError(exc.line, None, exc.message)])
    except ValueError as exc:
        return ParsedBars(pd.DataFrame(), [RowError(1, None, str(exc))])
    if not records:
        return ParsedBars(pd.DataFrame(), [RowError(1, None, "file is empty")])
    index, errors = _header(records[0][1])
    if errors:  # rows cannot be read against a broken header
        return ParsedBars(pd.DataFrame(), errors)
    rows: list[dict] = []
    seen: dict[date, int] = {}
    for line, row in records[1:]:
        if len(errors) >= MAX_ERRORS:
            break
        if not any(cell.strip() for cell in row):
            continue
        if len(rows) >= MAX_ROWS:
            errors.append(RowError(line, None, f"more than {MAX_ROWS} rows; split the file"))
            break
        bar, row_errors = _parse_row(line, row, index)
        errors.extend(row_errors)
        if "date" in bar:
            if bar["date"] in seen:
                errors.append(
                    RowError(
                        line,
                        "date",
                        f"duplicate date {bar['date']} (first on line {seen[bar['date']]})",
                    )
                )
            seen.setdefault(bar["date"], line)
        rows.append(bar)
    if not errors and not rows:
        errors.append(RowError(2, None, "no data rows"))
    if errors:
        return ParsedBars(pd.DataFrame(), errors[:MAX_ERRORS])
    frame = pd.DataFrame(rows).assign(ticker=ticker, source=source)
    return ParsedBars(canonical(frame), [])
