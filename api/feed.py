"""The market feed: one interface, a replay of stored bars and a live polling provider, and what
happens to every new trading day of bars (`BarProcessor`).

- `ReplayFeed` plays the bars already stored, one trading day at a time from a start date, every
  `interval_s` seconds, and moves the market clock to each day: the product "as if live"
  without a network, where the replay day is "today" for every query.
- `PollingFeed` asks a live provider (yfinance or Tiingo) for every instrument's bars since its
  newest final one, on the exchange calendar, with backoff (`api.services.bar_sync` stores
  them, continuous across splits and dividends).

For each day's bars the processor appends them to Postgres (bars already stored stay as they
are), puts the latest quote of each ticker in Redis (`quote:<ticker>`), publishes the quotes on
the `quotes` channel for the WebSocket layer, scores every logged forecast whose horizon has
now passed (the A/B outcomes), evaluates the users' alerts, forecasts every instrument of the
day (so the live A/B comparison and the rollback guard see outcomes without any client), and
finally announces the day on `feed:days` (sockets then refresh their forecasts). Prediction
cache keys carry the bar date, so they move on by themselves.

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
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

import asyncpg
import pandas as pd
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from api import channels
from api.db.ab import PredictionLogRepository
from api.db.clock import FeedStatusRepository, MarketClockRepository
from api.db.market import BarRepository, InstrumentRepository
from api.services.alert_evaluator import AlertEvaluator, DayQuote
from api.services.bar_sync import BarSync, TickerUpdate
from features.live import LiveProvider, ProviderError, RateLimited, UnknownSymbol
from features.sessions import MarketState, market_state, session_close

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
    after `end` (default: the last stored day).

    The replay drives the market clock: before a day is yielded the clock moves to it, so every
    query sees that day as "today" (`api.db.clock`). A replay from the start (`after` None) is a
    new clock run; one resumed after `after` continues the current run.
    """

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
            resumed = self._after is not None and self._after >= start
            if resumed:
                start = self._after + timedelta(days=1)  # type: ignore[operator]
            sessions = await bars.trading_days(start, self._end)
        clock = MarketClockRepository(self._pool)
        for i, day in enumerate(sessions):
            if i:
                await asyncio.sleep(self._interval)
            if i or resumed:
                await clock.advance(day)
            else:
                run = await clock.start_run(day)
                log.info("market_clock_run", run=run.run, day=str(day))
            yield day, await stored_day(self._pool, day)


MAX_CATCH_UP_DAYS = 5  # after a long gap only the newest days are announced one by one
CATCH_UP_DELAY = timedelta(minutes=20)  # providers publish final bars a while after the close
BACKOFF_BASE_S = 30.0
BACKOFF_CAP_S = 1800.0


@dataclass
class PollRound:
    """One pass over every instrument."""

    updates: list[TickerUpdate]
    bars: pd.DataFrame
    rate_limited: RateLimited | None = None

    @property
    def failed(self) -> list[TickerUpdate]:
        return [u for u in self.updates if not u.ok]


class PollingFeed:
    """New bars from a live provider for every instrument (or the given tickers), on the
    exchange's calendar (`features.sessions`):

    - while a session trades, every `poll_s`: today's bar is stored provisional;
    - once after each close (plus `CATCH_UP_DELAY`): the final bars, then nothing until the
      next open: no calls at all while the market is closed;
    - on errors and 429s, exponential backoff with full jitter (a 429's Retry-After is the
      floor), and the feed's health in `feed_status` for /readyz and the metrics.

    `now` and `sleep` are the time source, so tests can run a weekend in no time.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        provider: LiveProvider,
        tickers: list[str] | None = None,
        poll_s: float = 300.0,
        rounds: int | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._pool = pool
        self._sync = BarSync(pool, provider)
        self._tickers = tickers
        self._poll_s = poll_s
        self._rounds = rounds
        self._now = now
        self._sleep = sleep
        self._failures = 0  # consecutive rounds that failed as a whole
        self._retries = 0  # catch-up rounds that left a ticker without its final bar
        self._caught_up: date | None = None  # the last session whose final bars are stored
        self.calls = 0  # rounds that asked the provider (for tests and logs)

    async def days(self) -> AsyncIterator[tuple[date, pd.DataFrame]]:
        done = 0
        while self._rounds is None or done < self._rounds:
            done += 1
            now = self._now()
            state = market_state(now)
            due = state.open or (
                self._caught_up != state.last_completed and now >= _close_of(state) + CATCH_UP_DELAY
            )
            if not due:
                await self._sleep(self._until_due(state, now))
                continue
            result = await self.poll(state)
            for day, bars in _announced(result.bars):
                yield day, bars
            await self._sleep(await self._after_round(result, state))

    async def poll(self, state: MarketState) -> PollRound:
        """Update every instrument once; stops early on a 429 (the rest wait for the retry)."""
        self.calls += 1
        tickers = self._tickers or await InstrumentRepository(self._pool).tickers()
        overlaps = await self._sync.overlaps(tickers)
        updates, frames = [], []
        for ticker in sorted(tickers):
            try:
                update, bars = await self._sync.update(ticker, overlaps.get(ticker), state)
            except RateLimited as exc:
                log.warning("feed_rate_limited", provider=self._sync.provider, ticker=ticker)
                return PollRound(updates, _concat(frames), rate_limited=exc)
            except UnknownSymbol as exc:  # not this provider's: say so, it is no outage
                update, bars = TickerUpdate(ticker, error=f"unknown to provider: {exc}"), None
            except ProviderError as exc:  # one ticker failing never stops the others
                log.warning("feed_provider_failed", ticker=ticker, error=str(exc)[:200])
                update, bars = TickerUpdate(ticker, error=str(exc)[:200]), None
            updates.append(update)
            if bars is not None and not bars.empty:
                frames.append(bars)
        return PollRound(updates, _concat(frames))

    async def _after_round(self, result: PollRound, state: MarketState) -> float:
        """Record the round's health; how long to wait before the next one."""
        status = FeedStatusRepository(self._pool)
        # every ticker failing is an outage, "unknown symbol" included: yfinance reports a
        # network failure during its first lookup of a symbol that way
        outage = result.rate_limited is not None or (
            bool(result.updates) and all(u.error for u in result.updates)
        )
        if outage:
            self._failures += 1
            why = (
                f"rate limited: {result.rate_limited}"
                if result.rate_limited
                else f"all {len(result.updates)} tickers failed: {result.failed[0].error}"
            )
            await status.failed(self._sync.provider, why)
            floor = (result.rate_limited.retry_after_s or 0.0) if result.rate_limited else 0.0
            ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (self._failures - 1))
            return max(floor, random.uniform(0, ceiling))  # noqa: S311 -- full jitter, not a secret
        self._failures = 0
        newest = max((u.newest for u in result.updates if u.newest), default=None)
        await status.succeeded(self._sync.provider, newest)
        if state.open:
            return self._poll_s
        if _complete(result, state.last_completed):
            self._caught_up, self._retries = state.last_completed, 0
        else:  # a ticker failed, or its final bar is not published yet: retry, backing off
            self._retries += 1
        return self._until_due(state, self._now())

    def _until_due(self, state: MarketState, now: datetime) -> float:
        """Seconds until the next poll is due: the next open, or the pending catch-up (its
        retries back off, never past the next open)."""
        until_open = max(1.0, (state.next_open - now).total_seconds())
        if self._caught_up != state.last_completed:
            target = _close_of(state) + CATCH_UP_DELAY
            if target > now:
                return (target - now).total_seconds()
            if self._retries:
                retry = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (self._retries - 1))
                return min(until_open, retry)
            return 0.0
        return until_open


def _complete(result: PollRound, session: date) -> bool:
    """Whether every instrument the provider offers has its final bar of `session` now."""
    return all(
        (u.ok and u.newest is not None and u.newest >= session) or "unknown" in (u.error or "")
        for u in result.updates
    )


def _close_of(state: MarketState) -> datetime:
    """When the last completed session closed."""
    return session_close(state.last_completed)


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _announced(bars: pd.DataFrame) -> list[tuple[date, pd.DataFrame]]:
    """The stored bars as days to process, oldest first; after a long gap, the newest few."""
    if bars.empty:
        return []
    days = [(day, b.reset_index(drop=True)) for day, b in bars.groupby(bars["date"].dt.date)]
    return days[-MAX_CATCH_UP_DAYS:]


class BarProcessor:
    """What every new day of bars sets in motion (see the module docstring)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: Redis,
        alerts: AlertEvaluator | None = None,
        on_day: Callable[[], None] | None = None,
        forecast: Callable[[list[str]], Awaitable[int]] | None = None,
    ) -> None:
        self._pool = pool
        self._redis = redis
        self._alerts = alerts
        self._on_day = on_day  # e.g. a metrics counter
        self._forecast = forecast  # the day's forecasts of every instrument

    async def process(self, day: date, bars: pd.DataFrame) -> list[LiveQuote]:
        """Store, quote, score, alert and forecast one day. A provisional day (a session
        still trading) is stored and quoted only: alerts and forecasts wait for its close."""
        if bars.empty:
            return []
        frame = bars.assign(date=pd.to_datetime(bars["date"])).astype(
            {c: "float64" for c in ("open", "high", "low", "close", "volume")}
        )  # None (a close-only series) becomes NaN, stored as NULL
        final = bool(frame["final"].all()) if "final" in frame else True
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
        fired = forecasts = 0
        if final and self._alerts is not None:
            fired = len(
                await self._alerts.evaluate(
                    day, {q.ticker: DayQuote(q.close, q.previous_close) for q in quotes}
                )
            )
        if final and self._forecast is not None:
            try:
                forecasts = await self._forecast([q.ticker for q in quotes])
            except Exception as exc:  # serving down: the day is stored and announced anyway
                log.warning("feed_forecasts_failed", day=str(day), error=str(exc)[:200])
        await self._announce_day(day, [q.ticker for q in quotes])
        if self._on_day is not None:
            self._on_day()
        log.info(
            "feed_day",
            day=str(day),
            bars=len(quotes),
            final=final,
            outcomes_resolved=resolved,
            alerts=fired,
            forecasts=forecasts,
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
