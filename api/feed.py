"""The market feed: one interface, a replay of stored bars and a live polling provider, and what
happens to every new trading day of bars (`BarProcessor`).

- `ReplayFeed` plays the bars already stored, one trading day at a time from a start date, every
  `interval_s` seconds — the product "as if live" without a network.
- `PollingFeed` asks a live provider (yfinance) for each ticker's bars since its last stored one.

For each day's bars the processor appends them to Postgres (bars already stored stay as they
are), puts the latest quote of each ticker in Redis (`quote:<ticker>`), publishes the quotes on
the `quotes` channel for the WebSocket layer, and scores every logged forecast whose horizon has
now passed (the A/B outcomes). Prediction cache keys carry the bar date, so they move on by
themselves.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Protocol

import asyncpg
import pandas as pd
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from api.db.ab import PredictionLogRepository
from api.db.market import BarRepository
from features.live import LiveProvider, ProviderError

log = structlog.get_logger(__name__)
QUOTES_CHANNEL = "quotes"


@dataclass(frozen=True)
class Quote:
    ticker: str
    date: date
    close: float
    previous_close: float | None

    def payload(self) -> dict[str, object]:
        change = None if self.previous_close is None else self.close - self.previous_close
        return {
            "type": "quote",
            "ticker": self.ticker,
            "date": self.date.isoformat(),
            "close": self.close,
            "previous_close": self.previous_close,
            "change": change,
            "change_pct": None if change is None else change / self.previous_close,
        }


class MarketFeed(Protocol):
    """Trading days of new bars, oldest first: (day, canonical bars of that day)."""

    def days(self) -> AsyncIterator[tuple[date, pd.DataFrame]]: ...


class ReplayFeed:
    """Stored bars replayed from `start`, one trading day every `interval_s` seconds, stopping
    after `end` (default: the last stored day)."""

    def __init__(
        self, pool: asyncpg.Pool, start: date, interval_s: float = 3.0, end: date | None = None
    ) -> None:
        self._pool = pool
        self._start = start
        self._end = end
        self._interval = interval_s

    async def days(self) -> AsyncIterator[tuple[date, pd.DataFrame]]:
        sessions = await self._pool.fetch(
            """SELECT DISTINCT date FROM bars WHERE date >= $1 AND ($2::date IS NULL OR date <= $2)
               ORDER BY date""",
            self._start,
            self._end,
        )
        for i, row in enumerate(sessions):
            if i:
                await asyncio.sleep(self._interval)
            day = row["date"]
            rows = await self._pool.fetch(
                """SELECT ticker, date, open, high, low, close, volume, source FROM bars
                   WHERE date = $1 ORDER BY ticker""",
                day,
            )
            yield day, pd.DataFrame([dict(r) for r in rows])


class PollingFeed:
    """New bars from a live provider for the given tickers, polled every `interval_s`."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        provider: LiveProvider,
        tickers: list[str],
        interval_s: float = 300.0,
        rounds: int | None = None,
    ) -> None:
        self._pool = pool
        self._provider = provider
        self._tickers = tickers
        self._interval = interval_s
        self._rounds = rounds

    async def days(self) -> AsyncIterator[tuple[date, pd.DataFrame]]:
        done = 0
        while self._rounds is None or done < self._rounds:
            if done:
                await asyncio.sleep(self._interval)
            done += 1
            frames = []
            for ticker in self._tickers:
                last = await self._pool.fetchval(
                    "SELECT max(date) FROM bars WHERE ticker = $1", ticker
                )
                start = (last or date.today() - timedelta(days=30)) + timedelta(days=1)
                if start > date.today():
                    continue
                try:
                    bars = await asyncio.to_thread(
                        self._provider.daily_bars, ticker, start, date.today()
                    )
                except ProviderError as exc:  # one ticker failing never stops the feed
                    log.warning("feed_provider_failed", ticker=ticker, error=str(exc)[:200])
                    continue
                frames.append(bars)
            if not frames:
                continue
            new = pd.concat(frames, ignore_index=True)
            for day, bars in new.groupby(new["date"].dt.date):
                yield day, bars.reset_index(drop=True)


class BarProcessor:
    """What every new day of bars sets in motion (see the module docstring)."""

    def __init__(self, pool: asyncpg.Pool, redis: Redis) -> None:
        self._pool = pool
        self._redis = redis

    async def process(self, day: date, bars: pd.DataFrame) -> list[Quote]:
        if bars.empty:
            return []
        frame = bars.assign(date=pd.to_datetime(bars["date"])).astype(
            {c: "float64" for c in ("open", "high", "low", "close", "volume")}
        )  # None (a close-only series) becomes NaN, stored as NULL
        async with self._pool.acquire() as conn:
            async with conn.transaction():  # the staging table empties on commit
                await BarRepository(conn).insert_new(frame)
            previous = {
                r["ticker"]: r["close"]
                for r in await conn.fetch(
                    """SELECT DISTINCT ON (ticker) ticker, close FROM bars
                       WHERE ticker = ANY($1::text[]) AND date < $2
                       ORDER BY ticker, date DESC""",
                    sorted(frame["ticker"].unique()),
                    day,
                )
            }
        quotes = [
            Quote(r.ticker, day, float(r.close), previous.get(r.ticker)) for r in frame.itertuples()
        ]
        await self._announce(quotes)
        resolved = await PredictionLogRepository(self._pool).resolve_due()
        log.info("feed_day", day=str(day), bars=len(quotes), outcomes_resolved=resolved)
        return quotes

    async def _announce(self, quotes: list[Quote]) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for quote in quotes:
                    message = json.dumps(quote.payload())
                    pipe.set(f"quote:{quote.ticker}", message)
                    pipe.publish(QUOTES_CHANNEL, message)
                await pipe.execute()
        except (RedisError, OSError) as exc:  # the bars are stored; live pushes are best effort
            log.warning("feed_redis_unavailable", error=type(exc).__name__)


async def run_feed(feed: MarketFeed, processor: BarProcessor, stop: asyncio.Event) -> int:
    """Process days until the feed ends or `stop` is set; returns the days processed."""
    count = 0
    async for day, bars in feed.days():
        if stop.is_set():
            break
        await processor.process(day, bars)
        count += 1
    return count
