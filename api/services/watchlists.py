"""Watchlists: named lists of known tickers, one user's each (names unique per user)."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

from api.db.watchlists import WatchlistRepository, WatchlistRow
from api.errors import ProblemError
from api.schemas import RequestModel
from api.services.market_data import require_known
from features.bars import normalise_ticker


class WatchlistIn(RequestModel):
    name: str = Field(min_length=1, max_length=80, examples=["Tech to watch"])
    tickers: list[str] = Field(default_factory=list, max_length=200)

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "Tech to watch", "tickers": ["AAPL", "MSFT"]}]}
    )


class WatchlistOut(BaseModel):  # validated from a `WatchlistRow`
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    tickers: list[str]
    created_at: datetime


def _name_taken(name: str) -> ProblemError:
    return ProblemError(409, "name_taken", f"you already have a watchlist named {name!r}")


class WatchlistService:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def of_user(self, user_id: uuid.UUID) -> list[WatchlistRow]:
        return await WatchlistRepository(self._pool).of_user(user_id)

    async def owned(self, watchlist_id: uuid.UUID, user_id: uuid.UUID) -> WatchlistRow:
        """The caller's watchlist, or 404 — whoever else it may belong to."""
        row = await WatchlistRepository(self._pool).owned(watchlist_id, user_id)
        if row is None:
            raise ProblemError(404, "watchlist_not_found", "no such watchlist")
        return row

    async def create(self, user_id: uuid.UUID, body: WatchlistIn) -> WatchlistRow:
        tickers = await self._known(body.tickers)
        async with self._pool.acquire() as conn, conn.transaction():
            repo = WatchlistRepository(conn)
            watchlist_id = await repo.create(user_id, body.name.strip())
            if watchlist_id is None:
                raise _name_taken(body.name)
            await repo.set_tickers(watchlist_id, tickers)
        return await self.owned(watchlist_id, user_id)

    async def replace(self, watchlist: WatchlistRow, body: WatchlistIn) -> WatchlistRow:
        """Rename and set the tickers (the list replaces the old one)."""
        tickers = await self._known(body.tickers)
        async with self._pool.acquire() as conn, conn.transaction():
            repo = WatchlistRepository(conn)
            if not await repo.rename(watchlist.id, body.name.strip()):
                raise _name_taken(body.name)
            await repo.set_tickers(watchlist.id, tickers)
        return await self.owned(watchlist.id, watchlist.user_id)

    async def delete(self, watchlist: WatchlistRow) -> None:
        await WatchlistRepository(self._pool).delete(watchlist.id)

    async def _known(self, raw: list[str]) -> list[str]:
        try:
            tickers = sorted({normalise_ticker(t) for t in raw})
        except ValueError as exc:
            raise ProblemError(422, "invalid_ticker", str(exc)) from exc
        await require_known(self._pool, tickers)
        return tickers
