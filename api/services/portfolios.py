"""Portfolios as the API serves them: the ledger (with idempotent, oversell-proof writes), CSV
import and export through `transactions_csv`, and positions valued at the latest close.

Writes to one portfolio are serialised by a row lock on the portfolio (`SELECT … FOR UPDATE`),
and every write replays the whole ledger with the new entries before it commits, so a sell can
never exceed what is held at its date — whether requests race or a back-dated sell arrives.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import date
from decimal import Decimal

import asyncpg

from api.db.market import BarRepository
from api.db.portfolios import (
    PortfolioRepository,
    PortfolioRow,
    TransactionRepository,
    TransactionRow,
)
from api.errors import ProblemError, Unprocessable
from api.schemas import plain_decimal
from api.services.ledger import ZERO, Book, Entry, InsufficientCash, Oversold, Position, replay
from api.services.market_data import require_known
from api.services.portfolio_schemas import PositionOut, PositionsOut, TransactionIn, future_date
from api.services.transactions_csv import format_transactions_csv, parse_transactions_csv


def entry_of(row: TransactionRow) -> Entry:
    """A recorded transaction as the ledger sees it."""
    return Entry(
        row.type, row.date, row.ticker, row.quantity, row.price, row.amount, row.fee, row.sequence
    )


def _refused(exc: Oversold | InsufficientCash, line: int | None = None) -> ProblemError:
    """The 422 for a write the ledger cannot take (an oversell, or cash it does not hold)."""
    where = f"line {line}: " if line is not None else ""
    if isinstance(exc, InsufficientCash):
        return Unprocessable("insufficient_cash", f"{where}{exc}", cash=plain_decimal(exc.cash))
    return Unprocessable("oversold", f"{where}{exc}", held=plain_decimal(exc.held))


def _name_taken(name: str) -> ProblemError:
    return ProblemError(409, "name_taken", f"you already have a portfolio named {name!r}")


class PortfolioService:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    # ------------------------------------------------------------------ portfolios

    async def owned(self, portfolio_id: uuid.UUID, user_id: uuid.UUID) -> PortfolioRow:
        """The caller's portfolio, or 404 — whoever else it may belong to."""
        row = await PortfolioRepository(self._pool).owned(portfolio_id, user_id)
        if row is None:
            raise ProblemError(404, "portfolio_not_found", "no such portfolio")
        return row

    async def of_user(self, user_id: uuid.UUID) -> list[PortfolioRow]:
        """The user's portfolios, oldest first."""
        return await PortfolioRepository(self._pool).of_user(user_id)

    async def create(self, user_id: uuid.UUID, name: str) -> PortfolioRow:
        row = await PortfolioRepository(self._pool).create(user_id, name.strip())
        if row is None:
            raise _name_taken(name)
        return row

    async def rename(self, portfolio: PortfolioRow, name: str) -> PortfolioRow:
        row = await PortfolioRepository(self._pool).rename(portfolio.id, name.strip())
        if row is None:
            raise _name_taken(name)
        return row

    async def delete(self, portfolio: PortfolioRow) -> None:
        """The portfolio and its whole ledger."""
        await PortfolioRepository(self._pool).delete(portfolio.id)

    # ------------------------------------------------------------------ writes

    async def add(
        self, portfolio: PortfolioRow, tx: TransactionIn, idempotency_key: str | None, today: date
    ) -> tuple[TransactionRow, bool]:
        """Record one transaction; (row, created). A retried request with the same
        Idempotency-Key returns the first result; the same key with another body is refused.
        A transaction dated after `today` (the market's: the replay day under a simulated
        clock) is refused (422 `validation_error`)."""
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
            _check_date(tx, today)
            await require_known(conn, [tx.ticker] if tx.ticker else [])
            ledger = await repo.ledger(portfolio.id)
            try:
                replay([*map(entry_of, ledger), _last(tx.entry(), ledger)], check_cash=True)
            except (Oversold, InsufficientCash) as exc:
                raise _refused(exc) from exc
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
                replay((entry_of(t) for t in ledger if t.id != transaction_id), check_cash=True)
            except (Oversold, InsufficientCash) as exc:
                raise _refused(exc) from exc
            await repo.delete(portfolio.id, transaction_id)

    async def import_csv(
        self, portfolio: PortfolioRow, content: bytes, today: date
    ) -> list[TransactionRow]:
        """All rows or none: every row is validated (errors carry their line number; none may
        be dated after the market's `today`), then the whole ledger is replayed with them
        before anything is written."""
        parsed = parse_transactions_csv(content, today)
        async with self._pool.acquire() as conn, conn.transaction():
            await PortfolioRepository(conn).owned(portfolio.id, portfolio.user_id, lock=True)
            await require_known(conn, [tx.ticker for _, tx in parsed if tx.ticker])
            repo = TransactionRepository(conn)
            ledger = await repo.ledger(portfolio.id)
            top = max((t.sequence for t in ledger), default=0)
            entries = [entry_of(t) for t in ledger]
            lines: dict[int, int] = {}
            for i, (line, tx) in enumerate(parsed, start=1):
                entries.append(_with_sequence(tx.entry(), top + i))
                lines[top + i] = line
            try:
                replay(entries, check_cash=True)
            except (Oversold, InsufficientCash) as exc:
                raise _refused(exc, lines.get(exc.entry.sequence)) from exc
            return [await repo.insert(portfolio.id, tx.entry(), tx.note) for _, tx in parsed]

    # ------------------------------------------------------------------ reads

    async def page(
        self, portfolio: PortfolioRow, limit: int, offset: int
    ) -> tuple[list[TransactionRow], int]:
        """Transactions newest first, with the total count for pagination."""
        return await TransactionRepository(self._pool).page(portfolio.id, limit, offset)

    async def entries(self, portfolio: PortfolioRow) -> list[Entry]:
        """The whole ledger, in order, as the ledger sees it."""
        return [entry_of(t) for t in await TransactionRepository(self._pool).ledger(portfolio.id)]

    async def book(self, portfolio: PortfolioRow, until: date | None = None) -> Book:
        return replay(await self.entries(portfolio), until)

    async def valuation(
        self, portfolio: PortfolioRow, as_of: date | None = None, today: date | None = None
    ) -> PositionsOut:
        """Holdings from FIFO lots at their last close on or before `as_of` (the newest when
        None), with their weights, and the totals over them and cash. Without `as_of`, entries
        after the market's `today` (a replay's day, when given) have not happened yet."""
        book = await self.book(portfolio, as_of or today)
        held = [p for p in book.positions.values() if p.quantity > 0 or p.realised or p.dividends]
        async with self._pool.acquire() as conn:
            prices = await BarRepository(conn).last_closes([p.ticker for p in held], as_of)
        values = {p.ticker: _value(p, prices.get(p.ticker)) for p in held}
        holdings = sum((v or ZERO for v in values.values()), ZERO)
        total = holdings + book.cash
        positions = [
            _position(p, prices.get(p.ticker), values[p.ticker], total)
            for p in sorted(held, key=lambda p: p.ticker)
        ]
        return PositionsOut(
            portfolio_id=portfolio.id,
            as_of=as_of,
            cash=book.cash,
            invested=book.deposits - book.withdrawals,
            market_value=total,
            realised_pnl=sum((v.realised_pnl for v in positions), ZERO),
            unrealised_pnl=sum((v.unrealised_pnl or ZERO for v in positions), ZERO),
            positions=positions,
        )

    async def export_csv(self, portfolio: PortfolioRow) -> str:
        """The whole ledger in the import format (`transactions_csv.format_transactions_csv`)."""
        return format_transactions_csv(await TransactionRepository(self._pool).ledger(portfolio.id))


def _check_date(tx: TransactionIn, today: date) -> None:
    """422 `validation_error` (as the request's other checks answer) for a future date."""
    refused = future_date(tx.date, today)
    if refused:
        errors = [{"loc": ["body", "date"], "message": refused}]
        raise Unprocessable("validation_error", f"date: {refused}", errors=errors)


def _value(position: Position, price: tuple[float, date] | None) -> Decimal | None:
    """The holding at its last close; None when the ticker has no close yet."""
    return None if price is None else position.quantity * Decimal(str(price[0]))


def _position(
    p: Position, price: tuple[float, date] | None, value: Decimal | None, total: Decimal
) -> PositionOut:
    return PositionOut(
        ticker=p.ticker,
        quantity=p.quantity,
        cost_basis=p.cost_basis,
        average_cost=p.cost_basis / p.quantity if p.quantity else None,
        last_price=None if price is None else price[0],
        price_date=None if price is None else price[1],
        market_value=value,
        unrealised_pnl=None if value is None else value - p.cost_basis,
        realised_pnl=p.realised,
        dividends=p.dividends,
        # the position's share of the portfolio's value, cash included
        weight=None if value is None or not total else float(value / total),
    )


def _last(entry: Entry, ledger: list[TransactionRow]) -> Entry:
    """The new entry, ordered after everything already recorded on its date."""
    return _with_sequence(entry, max((t.sequence for t in ledger), default=0) + 1)


def _with_sequence(entry: Entry, sequence: int) -> Entry:
    return replace(entry, sequence=sequence)
