"""The market feed: one interface, a replay of stored bars and a live polling provider, and what
happens to every new trading day of bars (`BarProcessor`).

- `ReplayFeed` plays the bars already stored, one trading day at a time from a start date, every
  `interval_s` seconds — the product "as if live" without a network.
- `PollingFeed` asks a live provider (yfinance) for each ticker's bars since its last stored one.

For each day's bars the processor appends them to Postgres (bars already stored stay as they
are), puts the latest quote of each ticker in Redis (`quote:<ticker>`), publishes the quotes on
the `quotes` channel for the WebSocket layer, scores every logged forecast whose horizon has
now passed (the A/B outcomes), evaluates the users' alerts, and finally announces the day on
`feed:days` (sockets then refresh their forecasts). Prediction cache keys carry the bar date, so
they move on by themselves.

A replay is "as if live" for everything downstream: forecasts pushed and alerts evaluated for a
replayed day are made from the bars up to that day (`as_of`), never from later ones. Bars of a
replayed day are already stored, so appending them changes nothing.

`FeedLeader` runs the feed inside the API: every ingress replica starts one, a Redis lease lets
exactly one of them run the feed, and a replay resumes after the last day processed
(`feed:cursor`) when leadership moves to another replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Protocol

import asyncpg
import pandas as pd
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from api import channels
from api.db.ab import PredictionLogRepository
from api.db.market import BarRepository, InstrumentRepository
from api.services.alert_evaluator import AlertEvaluator, DayQuote
from features.live import LiveProvider, ProviderError

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class LiveQuote:
    """A close as the feed pushes it (`quote` messages); the REST quote is `api.schemas.Quote`."""

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


async def stored_day(pool: asyncpg.Pool, day: date) -> pd.DataFrame:
    """Every stored bar of one trading day, as a feed yields it."""
    async with pool.acquire() as conn:
        return await BarRepository(conn).of_day(day)


class ReplayFeed:
    """Stored bars replayed from `start`, one trading day every `interval_s` seconds, stopping
    after `end` (default: the last stored day)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        start: date | None,
        interval_s: float = 3.0,
        end: date | None = None,
        after: date | None = None,
    ) -> None:
        self._pool = pool
        self._start = start
        self._end = end
        self._after = after  # resume: skip days up to and including this one
        self._interval = interval_s

    async def days(self) -> AsyncIterator[tuple[date, pd.DataFrame]]:
        async with self._pool.acquire() as conn:
            bars = BarRepository(conn)
            start = self._start
            if start is None:  # a year before the newest bar
                start = (await bars.newest_date() or date.today()) - timedelta(days=365)
            if self._after is not None and self._after >= start:
                start = self._after + timedelta(days=1)
            sessions = await bars.trading_days(start, self._end)
        for i, day in enumerate(sessions):
            if i:
                await asyncio.sleep(self._interval)
            yield day, await stored_day(self._pool, day)


class PollingFeed:
    """New bars from a live provider for the given tickers (every equity when None), polled
    every `interval_s`."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        provider: LiveProvider,
        tickers: list[str] | None,
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
            tickers = self._tickers or await InstrumentRepository(self._pool).equities()
            async with self._pool.acquire() as conn:
                lasts = {t: await BarRepository(conn).last_date(t) for t in tickers}
            for ticker in tickers:
                last = lasts[ticker]
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

    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: Redis,
        alerts: AlertEvaluator | None = None,
        on_day: Callable[[], None] | None = None,
    ) -> None:
        self._pool = pool
        self._redis = redis
        self._alerts = alerts
        self._on_day = on_day  # e.g. a metrics counter

    async def process(self, day: date, bars: pd.DataFrame) -> list[LiveQuote]:
        if bars.empty:
            return []
        frame = bars.assign(date=pd.to_datetime(bars["date"])).astype(
            {c: "float64" for c in ("open", "high", "low", "close", "volume")}
        )  # None (a close-only series) becomes NaN, stored as NULL
        async with self._pool.acquire() as conn:
            async with conn.transaction():  # the staging table empties on commit
                await BarRepository(conn).insert_new(frame)
            previous = await BarRepository(conn).previous_closes(
                sorted(frame["ticker"].unique()), day
            )
        quotes = [
            LiveQuote(r.ticker, day, float(r.close), previous.get(r.ticker))
            for r in frame.itertuples()
        ]
        await self._announce(quotes)
        resolved = await PredictionLogRepository(self._pool).resolve_due()
        fired = 0
        if self._alerts is not None:
            fired = len(
                await self._alerts.evaluate(
                    day, {q.ticker: DayQuote(q.close, q.previous_close) for q in quotes}
                )
            )
        await self._announce_day(day, [q.ticker for q in quotes])
        if self._on_day is not None:
            self._on_day()
        log.info(
            "feed_day", day=str(day), bars=len(quotes), outcomes_resolved=resolved, alerts=fired
        )
        return quotes

    async def _announce(self, quotes: list[LiveQuote]) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for quote in quotes:
                    message = json.dumps(quote.payload())
                    pipe.set(f"quote:{quote.ticker}", message)
                    pipe.publish(channels.QUOTES, message)
                await pipe.execute()
        except (RedisError, OSError) as exc:  # the bars are stored; live pushes are best effort
            log.warning("feed_redis_unavailable", error=type(exc).__name__)

    async def _announce_day(self, day: date, tickers: list[str]) -> None:
        message = {"type": "day", "date": day.isoformat(), "tickers": sorted(tickers)}
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(channels.FEED_CLOCK, day.isoformat())
                pipe.set(channels.FEED_PROCESSED_AT, str(time.time()))
                pipe.publish(channels.DAYS, json.dumps(message))
                await pipe.execute()
        except (RedisError, OSError) as exc:
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


class FeedLeader:
    """Runs the feed in one place: whoever holds the Redis lease `feed:leader`.

    Each ingress replica runs a `FeedLeader`; one acquires the lease and renews it every third
    of `lease_s`, the others retry. If the leader dies (or loses Redis), its lease expires and
    another replica continues — a replay from the day after `feed:cursor`, so no day is skipped
    and none is processed twice in a row (alerts remember evaluated days, so a repeat is
    harmless anyway). With `loop`, a replay that reaches the newest bar starts over.
    """

    LEASE_KEY = "feed:leader"
    CURSOR_KEY = "feed:cursor"
    _RENEW = (
        "if redis.call('get', KEYS[1]) == ARGV[1] then "
        "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
    )
    _RELEASE = (
        "if redis.call('get', KEYS[1]) == ARGV[1] then "
        "return redis.call('del', KEYS[1]) else return 0 end"
    )

    def __init__(
        self,
        redis: Redis,
        processor: BarProcessor,
        make_feed: Callable[[date | None], MarketFeed],
        lease_s: float,
        loop: bool,
    ) -> None:
        self._redis = redis
        self._processor = processor
        self._make_feed = make_feed
        self._lease_ms = int(lease_s * 1000)
        self._loop = loop
        self._token = uuid.uuid4().hex
        self.leading = asyncio.Event()

    async def run(self) -> None:
        """Until cancelled: wait for the lease, run the feed while holding it."""
        pause = self._lease_ms / 3000
        while True:
            try:
                if await self._redis.set(self.LEASE_KEY, self._token, nx=True, px=self._lease_ms):
                    await self._lead(pause)
                    if not self._loop:
                        return
            except (RedisError, OSError) as exc:
                log.warning("feed_lease_unavailable", error=type(exc).__name__)
            finally:
                self.leading.clear()
            await asyncio.sleep(pause)

    async def _lead(self, pause: float) -> None:
        self.leading.set()
        log.info("feed_leader", token=self._token[:8])
        work = asyncio.create_task(self._play())
        try:
            while not work.done():
                await asyncio.wait({work}, timeout=pause)
                renewed = await self._redis.eval(
                    self._RENEW, 1, self.LEASE_KEY, self._token, self._lease_ms
                )
                if not renewed:
                    log.warning("feed_lease_lost")
                    break
            if work.done():
                work.result()  # a failure propagates to the retry loop
        finally:
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await work
            with contextlib.suppress(RedisError, OSError):
                await self._redis.eval(self._RELEASE, 1, self.LEASE_KEY, self._token)

    async def _play(self) -> None:
        while True:
            raw = await self._redis.get(self.CURSOR_KEY)
            after = date.fromisoformat(raw) if raw else None
            played = 0
            async for day, bars in self._make_feed(after).days():
                await self._processor.process(day, bars)
                await self._redis.set(self.CURSOR_KEY, day.isoformat())
                played += 1
            if not self._loop:
                return
            await self._redis.delete(self.CURSOR_KEY)  # start over
            if not played:  # nothing stored to replay yet
                await asyncio.sleep(self._lease_ms / 1000)
