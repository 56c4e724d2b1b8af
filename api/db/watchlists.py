"""Repository for watchlists: named lists of tickers, one user's each. Every query names the
owner or the watchlist explicitly; ownership is checked once, in the `OwnedWatchlist` dependency
(`api.routers.watchlists`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

type Db = asyncpg.Connection | asyncpg.Pool


@dataclass(frozen=True)
class WatchlistRow:
    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    tickers: list[str]
    created_at: datetime


class WatchlistRepository:
    def __init__(self, db: Db) -> None:
        self._db = db

    async def of_user(
        self, user_id: uuid.UUID, watchlist_id: uuid.UUID | None = None
    ) -> list[WatchlistRow]:
        """The user's watchlists (or just one of them) with their tickers, in one query."""
        rows = await self._db.fetch(
            """SELECT w.id, w.user_id, w.name, w.created_at,
                      coalesce(array_agg(i.ticker ORDER BY i.ticker)
                               FILTER (WHERE i.ticker IS NOT NULL), '{}') AS tickers
               FROM watchlists w LEFT JOIN watchlist_items i ON i.watchlist_id = w.id
               WHERE w.user_id = $1 AND ($2::uuid IS NULL OR w.id = $2)
               GROUP BY w.id ORDER BY w.created_at""",
            user_id,
            watchlist_id,
        )
        return [WatchlistRow(**dict(r)) for r in rows]

    async def owned(self, watchlist_id: uuid.UUID, user_id: uuid.UUID) -> WatchlistRow | None:
        """The watchlist if it belongs to the user."""
        found = await self.of_user(user_id, watchlist_id)
        return found[0] if found else None

    async def create(self, user_id: uuid.UUID, name: str) -> uuid.UUID | None:
        """The new watchlist's id, or None when the user already has one of that name."""
        return await self._db.fetchval(
            """INSERT INTO watchlists (id, user_id, name) VALUES ($1, $2, $3)
               ON CONFLICT (user_id, name) DO NOTHING RETURNING id""",
            uuid.uuid4(),
            user_id,
            name,
        )

    async def rename(self, watchlist_id: uuid.UUID, name: str) -> bool:
        """False when the name is taken by another of the owner's watchlists."""
        try:
            await self._db.execute(
                "UPDATE watchlists SET name = $2 WHERE id = $1", watchlist_id, name
            )
        except asyncpg.UniqueViolationError:
            return False
        return True

    async def set_tickers(self, watchlist_id: uuid.UUID, tickers: list[str]) -> None:
        """Replace a watchlist's tickers (call inside a transaction)."""
        await self._db.execute("DELETE FROM watchlist_items WHERE watchlist_id = $1", watchlist_id)
        await self._db.executemany(
            "INSERT INTO watchlist_items (watchlist_id, ticker) VALUES ($1, $2)",
            [(watchlist_id, t) for t in tickers],
        )

    async def delete(self, watchlist_id: uuid.UUID) -> None:
        await self._db.execute("DELETE FROM watchlists WHERE id = $1", watchlist_id)
