"""Repositories for portfolios and their transactions. Every query names the owner or the
portfolio explicitly; ownership itself is checked once, in the `OwnedPortfolio` dependency
(`api.routers.portfolio`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Protocol

import asyncpg

type Db = asyncpg.Connection | asyncpg.Pool


class LedgerFields(Protocol):
    """What a transaction row stores of a ledger entry; `api.services.ledger.Entry` has these
    (read-only properties, so a frozen dataclass fits), and this layer never imports it."""

    @property
    def type(self) -> str: ...
    @property
    def date(self) -> date: ...
    @property
    def ticker(self) -> str | None: ...
    @property
    def quantity(self) -> Decimal: ...
    @property
    def price(self) -> Decimal: ...
    @property
    def amount(self) -> Decimal: ...
    @property
    def fee(self) -> Decimal: ...


@dataclass(frozen=True)
class PortfolioRow:
    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    base_currency: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class TransactionRow:
    id: uuid.UUID
    sequence: int
    type: str
    date: date
    ticker: str | None
    quantity: Decimal
    price: Decimal
    amount: Decimal
    fee: Decimal
    note: str
    created_at: datetime


_PORTFOLIO = "id, user_id, name, base_currency, created_at, updated_at"
_TX = "id, sequence, type, date, ticker, quantity, price, amount, fee, note, created_at"


class PortfolioRepository:
    def __init__(self, db: Db) -> None:
        self._db = db

    async def create(self, user_id: uuid.UUID, name: str) -> PortfolioRow | None:
        """The new portfolio, or None when the user already has one of that name."""
        row = await self._db.fetchrow(
            f"""INSERT INTO portfolios (id, user_id, name) VALUES ($1, $2, $3)
                ON CONFLICT (user_id, name) DO NOTHING RETURNING {_PORTFOLIO}""",
            uuid.uuid4(),
            user_id,
            name,
        )
        return PortfolioRow(**dict(row)) if row else None

    async def owned(
        self, portfolio_id: uuid.UUID, user_id: uuid.UUID, lock: bool = False
    ) -> PortfolioRow | None:
        """The portfolio if it belongs to the user (FOR UPDATE when `lock`, in a transaction)."""
        row = await self._db.fetchrow(
            f"""SELECT {_PORTFOLIO} FROM portfolios WHERE id = $1 AND user_id = $2
                {"FOR UPDATE" if lock else ""}""",
            portfolio_id,
            user_id,
        )
        return PortfolioRow(**dict(row)) if row else None

    async def of_user(self, user_id: uuid.UUID) -> list[PortfolioRow]:
        rows = await self._db.fetch(
            f"SELECT {_PORTFOLIO} FROM portfolios WHERE user_id = $1 ORDER BY created_at, id",
            user_id,
        )
        return [PortfolioRow(**dict(r)) for r in rows]

    async def rename(self, portfolio_id: uuid.UUID, name: str) -> PortfolioRow | None:
        """None when the name is taken by another of the owner's portfolios."""
        try:
            row = await self._db.fetchrow(
                f"""UPDATE portfolios SET name = $2, updated_at = now() WHERE id = $1
                    RETURNING {_PORTFOLIO}""",
                portfolio_id,
                name,
            )
        except asyncpg.UniqueViolationError:
            return None
        return PortfolioRow(**dict(row)) if row else None

    async def delete(self, portfolio_id: uuid.UUID) -> None:
        await self._db.execute("DELETE FROM portfolios WHERE id = $1", portfolio_id)


class TransactionRepository:
    def __init__(self, db: Db) -> None:
        self._db = db

    async def ledger(self, portfolio_id: uuid.UUID) -> list[TransactionRow]:
        rows = await self._db.fetch(
            f"""SELECT {_TX} FROM portfolio_transactions WHERE portfolio_id = $1
                ORDER BY date, sequence""",
            portfolio_id,
        )
        return [TransactionRow(**dict(r)) for r in rows]

    async def page(
        self, portfolio_id: uuid.UUID, limit: int, offset: int
    ) -> tuple[list[TransactionRow], int]:
        """Newest first, with the total count for pagination."""
        rows = await self._db.fetch(
            f"""SELECT {_TX}, count(*) OVER () AS total FROM portfolio_transactions
                WHERE portfolio_id = $1 ORDER BY date DESC, sequence DESC LIMIT $2 OFFSET $3""",
            portfolio_id,
            limit,
            offset,
        )
        total = (
            rows[0]["total"]
            if rows
            else await self._db.fetchval(
                "SELECT count(*) FROM portfolio_transactions WHERE portfolio_id = $1", portfolio_id
            )
        )
        return [
            TransactionRow(**{k: v for k, v in dict(r).items() if k != "total"}) for r in rows
        ], total

    async def by_idempotency_key(
        self, portfolio_id: uuid.UUID, key: str
    ) -> tuple[TransactionRow, str] | None:
        row = await self._db.fetchrow(
            f"""SELECT {_TX}, request_hash FROM portfolio_transactions
                WHERE portfolio_id = $1 AND idempotency_key = $2""",
            portfolio_id,
            key,
        )
        if row is None:
            return None
        values = dict(row)
        request_hash = values.pop("request_hash")
        return TransactionRow(**values), request_hash

    async def insert(
        self,
        portfolio_id: uuid.UUID,
        entry: LedgerFields,
        note: str = "",
        idempotency_key: str | None = None,
        request_hash: str | None = None,
    ) -> TransactionRow:
        row = await self._db.fetchrow(
            f"""INSERT INTO portfolio_transactions
                    (id, portfolio_id, type, date, ticker, quantity, price, amount, fee, note,
                     idempotency_key, request_hash)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING {_TX}""",
            uuid.uuid4(),
            portfolio_id,
            entry.type,
            entry.date,
            entry.ticker,
            entry.quantity,
            entry.price,
            entry.amount,
            entry.fee,
            note,
            idempotency_key,
            request_hash,
        )
        assert row is not None
        return TransactionRow(**dict(row))

    async def delete(self, portfolio_id: uuid.UUID, transaction_id: uuid.UUID) -> bool:
        status = await self._db.execute(
            "DELETE FROM portfolio_transactions WHERE portfolio_id = $1 AND id = $2",
            portfolio_id,
            transaction_id,
        )
        return status.endswith(" 1")
