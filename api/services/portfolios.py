"""Portfolios as the API serves them: the ledger (with idempotent, oversell-proof writes), CSV
import and export, and positions valued at the latest close.

Writes to one portfolio are serialised by a row lock on the portfolio (`SELECT … FOR UPDATE`),
and every write replays the whole ledger with the new entries before it commits, so a sell can
never exceed what is held at its date — whether requests race or a back-dated sell arrives.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import uuid
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Self

import asyncpg
from pydantic import BaseModel, Field, ValidationError, model_validator

from api.db.portfolios import (
    PortfolioRepository,
    PortfolioRow,
    TransactionRepository,
    TransactionRow,
)
from api.errors import ProblemError, Unprocessable
from api.services.ledger import ZERO, Book, Entry, Oversold, replay
from features.bars import normalise_ticker

MAX_AMOUNT = Decimal("1e12")
MAX_CSV_BYTES = 2 * 1024 * 1024
MAX_CSV_ROWS = 20_000
CSV_COLUMNS = ("date", "type", "ticker", "quantity", "price", "amount", "fee", "note")

TransactionType = Literal["buy", "sell", "dividend", "deposit", "withdraw", "fee"]


class TransactionIn(BaseModel):
    """A buy or sell needs ticker, quantity and price (fee optional); a dividend a ticker and
    an amount; a deposit, withdrawal or fee an amount and no ticker. `quantity × price` stands
    in for a missing amount."""

    type: TransactionType
    date: date
    ticker: str | None = Field(default=None, max_length=15)
    quantity: Decimal | None = Field(default=None, gt=0, le=MAX_AMOUNT)
    price: Decimal | None = Field(default=None, ge=0, le=MAX_AMOUNT)
    amount: Decimal | None = Field(default=None, gt=0, le=MAX_AMOUNT)
    fee: Decimal = Field(default=ZERO, ge=0, le=MAX_AMOUNT)
    note: str = Field(default="", max_length=200)

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "type": "buy",
                    "ticker": "AAPL",
                    "quantity": "10",
                    "price": "150.25",
                    "date": "2022-03-01",
                    "fee": "1",
                },
                {"type": "deposit", "amount": "10000", "date": "2022-01-03"},
            ]
        }
    }

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if self.date > date.today():
            raise ValueError("date must not be in the future")
        if self.type in ("buy", "sell", "dividend"):
            if not self.ticker:
                raise ValueError(f"a {self.type} needs a ticker")
            self.ticker = normalise_ticker(self.ticker)
        elif self.ticker:
            raise ValueError(f"a {self.type} has no ticker")
        if self.type in ("buy", "sell"):
            if self.quantity is None or self.price is None or self.price == 0:
                raise ValueError(f"a {self.type} needs quantity and a positive price")
        elif self.amount is None:
            if self.quantity is None or self.price is None:
                raise ValueError(f"a {self.type} needs an amount")
            self.amount = self.quantity * self.price
        return self

    def entry(self) -> Entry:
        trade = self.type in ("buy", "sell")
        return Entry(
            self.type,
            self.date,
            self.ticker,
            self.quantity if trade else ZERO,
            self.price if trade else ZERO,
            ZERO if trade else (self.amount or ZERO),
            self.fee if trade else ZERO,
        )

    def fingerprint(self) -> str:
        return hashlib.sha256(
            json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        ).hexdigest()


@dataclass(frozen=True)
class PositionView:
    ticker: str
    quantity: Decimal
    cost_basis: Decimal
    average_cost: Decimal | None
    last_price: float | None
    price_date: date | None
    market_value: Decimal | None
    unrealised_pnl: Decimal | None
    realised_pnl: Decimal
    dividends: Decimal


def _oversold(exc: Oversold, line: int | None = None) -> ProblemError:
    where = f"line {line}: " if line is not None else ""
    return Unprocessable("oversold", f"{where}{exc}", held=str(exc.held))


class PortfolioService:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    # ------------------------------------------------------------------ portfolios

    async def create(self, user_id: uuid.UUID, name: str) -> PortfolioRow:
        row = await PortfolioRepository(self._pool).create(user_id, name.strip())
        if row is None:
            raise ProblemError(409, "name_taken", f"you already have a portfolio named {name!r}")
        return row

    async def rename(self, portfolio: PortfolioRow, name: str) -> PortfolioRow:
        row = await PortfolioRepository(self._pool).rename(portfolio.id, name.strip())
        if row is None:
            raise ProblemError(409, "name_taken", f"you already have a portfolio named {name!r}")
        return row

    # ------------------------------------------------------------------ writes

    async def add(
        self, portfolio: PortfolioRow, tx: TransactionIn, idempotency_key: str | None
    ) -> tuple[TransactionRow, bool]:
        """Record one transaction; (row, created). A retried request with the same
        Idempotency-Key returns the first result; the same key with another body is refused."""
        fingerprint = tx.fingerprint()
        async with self._pool.acquire() as conn, conn.transaction():
            await PortfolioRepository(conn).owned(portfolio.id, portfolio.user_id, lock=True)
            repo = TransactionRepository(conn)
            if idempotency_key is not None:
                earlier = await repo.by_idempotency_key(portfolio.id, idempotency_key)
                if earlier is not None:
                    row, seen = earlier
                    if seen != fingerprint:
                        raise ProblemError(
                            409,
                            "idempotency_key_reused",
                            "this Idempotency-Key was used for a different transaction",
                        )
                    return row, False
            await self._check_tickers(conn, [tx])
            ledger = await repo.ledger(portfolio.id)
            try:
                replay([*(t.entry() for t in ledger), _last(tx.entry(), ledger)])
            except Oversold as exc:
                raise _oversold(exc) from exc
            row = await repo.insert(portfolio.id, tx.entry(), tx.note, idempotency_key, fingerprint)
        return row, True

    async def remove(self, portfolio: PortfolioRow, transaction_id: uuid.UUID) -> None:
        """Delete a transaction unless that would leave a later sell without shares."""
        async with self._pool.acquire() as conn, conn.transaction():
            await PortfolioRepository(conn).owned(portfolio.id, portfolio.user_id, lock=True)
            repo = TransactionRepository(conn)
            ledger = await repo.ledger(portfolio.id)
            if not any(t.id == transaction_id for t in ledger):
                raise ProblemError(404, "transaction_not_found", "no such transaction")
            try:
                replay(t.entry() for t in ledger if t.id != transaction_id)
            except Oversold as exc:
                raise _oversold(exc) from exc
            await repo.delete(portfolio.id, transaction_id)

    async def import_csv(self, portfolio: PortfolioRow, content: bytes) -> list[TransactionRow]:
        """All rows or none: every row is validated (errors carry their line number), then the
        whole ledger is replayed with them before anything is written."""
        parsed = parse_transactions_csv(content)
        async with self._pool.acquire() as conn, conn.transaction():
            await PortfolioRepository(conn).owned(portfolio.id, portfolio.user_id, lock=True)
            await self._check_tickers(conn, [tx for _, tx in parsed])
            repo = TransactionRepository(conn)
            ledger = await repo.ledger(portfolio.id)
            top = max((t.sequence for t in ledger), default=0)
            entries = [t.entry() for t in ledger]
            lines: dict[int, int] = {}
            for i, (line, tx) in enumerate(parsed, start=1):
                entries.append(_with_sequence(tx.entry(), top + i))
                lines[top + i] = line
            try:
                replay(entries)
            except Oversold as exc:
                raise _oversold(exc, lines.get(exc.entry.sequence)) from exc
            return [await repo.insert(portfolio.id, tx.entry(), tx.note) for _, tx in parsed]

    async def _check_tickers(self, conn: asyncpg.Connection, txs: list[TransactionIn]) -> None:
        tickers = sorted({t.ticker for t in txs if t.ticker})
        if not tickers:
            return
        known = {
            r["ticker"]
            for r in await conn.fetch(
                "SELECT ticker FROM instruments WHERE ticker = ANY($1::text[])", tickers
            )
        }
        unknown = [t for t in tickers if t not in known]
        if unknown:
            raise Unprocessable(
                "unknown_ticker",
                f"unknown ticker(s): {', '.join(unknown)}; import their bars first",
            )

    # ------------------------------------------------------------------ reads

    async def book(self, portfolio: PortfolioRow, until: date | None = None) -> Book:
        ledger = await TransactionRepository(self._pool).ledger(portfolio.id)
        return replay((t.entry() for t in ledger), until)

    async def positions(
        self, portfolio: PortfolioRow, as_of: date | None = None
    ) -> tuple[Book, list[PositionView]]:
        book = await self.book(portfolio, as_of)
        held = [p for p in book.positions.values() if p.quantity > 0 or p.realised or p.dividends]
        prices = await self._last_prices([p.ticker for p in held], as_of)
        views = []
        for p in sorted(held, key=lambda p: p.ticker):
            price, when = prices.get(p.ticker, (None, None))
            value = None if price is None else p.quantity * Decimal(str(price))
            views.append(
                PositionView(
                    ticker=p.ticker,
                    quantity=p.quantity,
                    cost_basis=p.cost_basis,
                    average_cost=p.cost_basis / p.quantity if p.quantity else None,
                    last_price=price,
                    price_date=when,
                    market_value=value,
                    unrealised_pnl=None if value is None else value - p.cost_basis,
                    realised_pnl=p.realised,
                    dividends=p.dividends,
                )
            )
        return book, views

    async def _last_prices(
        self, tickers: list[str], as_of: date | None
    ) -> dict[str, tuple[float, date]]:
        rows = await self._pool.fetch(
            """SELECT t.ticker, b.close, b.date FROM unnest($1::text[]) AS t(ticker)
               CROSS JOIN LATERAL (SELECT close, date FROM bars WHERE ticker = t.ticker
                                   AND ($2::date IS NULL OR date <= $2)
                                   ORDER BY date DESC LIMIT 1) b""",
            tickers,
            as_of,
        )
        return {r["ticker"]: (r["close"], r["date"]) for r in rows}

    async def export_csv(self, portfolio: PortfolioRow) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for t in await TransactionRepository(self._pool).ledger(portfolio.id):
            trade = t.type in ("buy", "sell")
            writer.writerow(
                [
                    t.date.isoformat(),
                    t.type,
                    t.ticker or "",
                    t.quantity if trade else "",
                    t.price if trade else "",
                    "" if trade else t.amount,
                    t.fee if trade and t.fee else "",
                    _csv_safe(t.note),
                ]
            )
        return out.getvalue()


def _last(entry: Entry, ledger: list[TransactionRow]) -> Entry:
    """The new entry, ordered after everything already recorded on its date."""
    return _with_sequence(entry, max((t.sequence for t in ledger), default=0) + 1)


def _with_sequence(entry: Entry, sequence: int) -> Entry:
    return Entry(
        entry.type,
        entry.date,
        entry.ticker,
        entry.quantity,
        entry.price,
        entry.amount,
        entry.fee,
        sequence,
    )


def _csv_safe(text: str) -> str:
    """Neutralise spreadsheet formulas in free text (CSV injection)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def parse_transactions_csv(content: bytes) -> list[tuple[int, TransactionIn]]:
    """(line number, transaction) for every row; any bad row refuses the whole file, listing
    every error with its line (the header is line 1)."""
    if len(content) > MAX_CSV_BYTES:
        raise ProblemError(413, "file_too_large", f"CSV larger than {MAX_CSV_BYTES} bytes")
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Unprocessable("invalid_csv", "the file is not UTF-8 text") from exc
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip().lower() for h in reader.fieldnames or []]
    missing = [c for c in ("date", "type") if c not in header]
    unknown = [h for h in header if h not in CSV_COLUMNS]
    if missing or unknown:
        raise Unprocessable(
            "invalid_csv",
            f"header must use the columns {', '.join(CSV_COLUMNS)}"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unknown {', '.join(unknown)}" if unknown else ""),
        )
    rows: list[tuple[int, TransactionIn]] = []
    errors: list[dict[str, Any]] = []
    for index, raw in enumerate(reader, start=2):
        if index - 1 > MAX_CSV_ROWS:
            raise Unprocessable("invalid_csv", f"at most {MAX_CSV_ROWS} rows per file")
        values = {k.strip().lower(): (v or "").strip() for k, v in raw.items() if k is not None}
        try:
            rows.append(
                (index, TransactionIn.model_validate({k: v for k, v in values.items() if v}))
            )
        except (ValidationError, ValueError, InvalidOperation) as exc:
            errors.append({"line": index, "message": _first_error(exc)})
    if errors:
        raise Unprocessable(
            "invalid_csv",
            f"{len(errors)} bad row(s); nothing was imported",
            errors=errors[:100],
        )
    if not rows:
        raise Unprocessable("invalid_csv", "the file has no transactions")
    return rows


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        return f"{where}: {message}" if where else message
    return str(exc)
