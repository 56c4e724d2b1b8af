"""Transactions as CSV: parsing an import (every bad row reported with its line) and writing
the export in the same format, with spreadsheet formulas neutralised both ways."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from datetime import date
from decimal import InvalidOperation
from typing import Any

from pydantic import ValidationError

from api.db.portfolios import TransactionRow
from api.errors import ProblemError, Unprocessable
from api.schemas import plain_decimal
from api.security.input_guard import text_problem
from api.services.portfolio_schemas import TransactionIn, future_date
from features.csv_import import CsvSyntaxError, csv_rows, decode_csv

MAX_CSV_BYTES = 2 * 1024 * 1024
MAX_CSV_ROWS = 20_000
CSV_COLUMNS = ("date", "type", "ticker", "quantity", "price", "amount", "fee", "note")

# OWASP CSV injection: a cell starting with one of these is read as a formula by spreadsheets.
# The export prefixes such a cell with a quote (also one that already starts with quotes then a
# trigger, so the escape can be undone); the import removes exactly that one quote.
_FORMULA = re.compile(r"'*[=+\-@\t\r]")


def formula_safe(text: str) -> str:
    return "'" + text if _FORMULA.match(text) else text


def formula_unsafe(text: str) -> str:
    """Undo `formula_safe` (a cell a spreadsheet saved as text keeps its leading quote)."""
    return text[1:] if text.startswith("'") and _FORMULA.match(text[1:]) else text


def format_transactions_csv(ledger: Iterable[TransactionRow]) -> str:
    """The ledger in the import format: every field quoted, CRLF line ends, numbers in
    positional notation and notes neutralised against spreadsheet formulas, so the file
    opens safely and imports back to the same ledger."""
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for t in ledger:
        trade = t.type in ("buy", "sell")
        writer.writerow(
            [
                t.date.isoformat(),
                t.type,
                t.ticker or "",
                plain_decimal(t.quantity) if trade else "",
                plain_decimal(t.price) if trade else "",
                "" if trade else plain_decimal(t.amount),
                plain_decimal(t.fee) if trade and t.fee else "",
                formula_safe(t.note),
            ]
        )
    return out.getvalue()


def parse_transactions_csv(content: bytes, today: date) -> list[tuple[int, TransactionIn]]:
    """(line number, transaction) for every row; any bad row refuses the whole file, listing
    every error with its line (the header is line 1; a record spanning lines counts from its
    first). A row dated after `today` (the market's) is a bad row. Malformed CSV is a 422
    naming its line, never a server error."""
    if len(content) > MAX_CSV_BYTES:
        raise ProblemError(413, "file_too_large", f"CSV larger than {MAX_CSV_BYTES} bytes")
    try:
        records = list(csv_rows(decode_csv(content)))
    except CsvSyntaxError as exc:
        error = {"line": exc.line, "message": exc.message}
        raise Unprocessable("invalid_csv", str(exc), errors=[error]) from exc
    except ValueError as exc:
        raise Unprocessable("invalid_csv", str(exc)) from exc
    header = [h.strip().lower() for h in records[0][1]] if records else []
    missing = [c for c in ("date", "type") if c not in header]
    unknown = [h for h in header if h not in CSV_COLUMNS]
    if missing or unknown or len(set(header)) != len(header):
        raise Unprocessable(
            "invalid_csv",
            f"header must use the columns {', '.join(CSV_COLUMNS)} once each"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unknown {', '.join(unknown)}" if unknown else ""),
        )
    rows: list[tuple[int, TransactionIn]] = []
    errors: list[dict[str, Any]] = []
    for line, cells in records[1:]:
        if len(rows) + len(errors) >= MAX_CSV_ROWS:
            raise Unprocessable("invalid_csv", f"at most {MAX_CSV_ROWS} rows per file")
        if not any(cell.strip() for cell in cells):
            continue
        try:
            tx = _transaction(header, cells)
        except (ValidationError, ValueError, InvalidOperation) as exc:
            errors.append({"line": line, "message": _first_error(exc)})
            continue
        refused = future_date(tx.date, today)
        if refused:
            errors.append({"line": line, "message": f"date: {refused}"})
        else:
            rows.append((line, tx))
    if errors:
        raise Unprocessable(
            "invalid_csv",
            f"{len(errors)} bad row(s); nothing was imported",
            errors=errors[:100],
        )
    if not rows:
        raise Unprocessable("invalid_csv", "the file has no transactions")
    return rows


def _transaction(header: list[str], cells: list[str]) -> TransactionIn:
    if len(cells) > len(header):
        raise ValueError(f"expected {len(header)} fields, got {len(cells)}")
    values = dict(zip(header, cells, strict=False))  # missing trailing fields are empty
    for column, cell in values.items():
        problem = text_problem(cell)
        if problem:
            raise ValueError(f"{column}: {problem}")
    note = formula_unsafe(values.pop("note", ""))  # kept exactly as written, spaces included
    fields: dict[str, str] = {k: v.strip() for k, v in values.items() if v.strip()}
    return TransactionIn.model_validate({**fields, **({"note": note} if note else {})})


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        return f"{where}: {message}" if where else message
    return str(exc)
