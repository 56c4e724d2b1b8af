"""The market feed: stored bars replayed day by day under the market clock and live bars from a
recorded provider answer, each day stored, quoted in Redis, published, and scoring due
forecasts as the clock passes their horizon."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime

import asyncpg
import httpx
import pandas as pd
import pytest
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from api import channels
from api.db.ab import LoggedPrediction, PredictionLogRepository
from api.db.clock import MarketClockRepository
from api.feed import BarProcessor, FeedLeader, PollingFeed, ReplayFeed, run_feed
from contracts import Forecast
from features.bars import ticker_frame
from features.live import YFinanceProvider
from tests.features.test_live import _recorded
from tests.utils import eventually


@pytest.fixture(autouse=True)
async def real_clock_after(pool: asyncpg.Pool) -> AsyncIterator[None]:
    """A replay moves the shared database's market clock: put the real one back after each."""
    yield
    await MarketClockRepository(pool).stop()


async def _no_wait(seconds: float) -> None:
    await asyncio.sleep(0)


async def test_replay_plays_stored_days_in_order_and_quotes_them(
    pool: asyncpg.Pool, redis: Redis, bundled_bars: pd.DataFrame
) -> None:
    listener = redis.pubsub()
    await listener.subscribe(channels.QUOTES)
    feed = ReplayFeed(pool, start=date(2022, 12, 20), interval_s=0, end=date(2022, 12, 23))
    days = []
    processor = BarProcessor(pool, redis)
    async for day, bars in feed.days():
        days.append(day)
        assert set(bars["date"]) == {day}
        await processor.process(day, bars)
    assert days == [date(2022, 12, d) for d in (20, 21, 22, 23)]

    aapl = ticker_frame(bundled_bars, "AAPL")["close"]
    quote = json.loads(await redis.get("quote:AAPL"))
    assert quote["date"] == "2022-12-23" and quote["close"] == pytest.approx(aapl["2022-12-23"])
    assert quote["change"] == pytest.approx(aapl["2022-12-23"] - aapl["2022-12-22"])
    received, quiet = [], 0
    while quiet < 10:  # drain until the channel has been quiet for a while
        message = await listener.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message is None:
            quiet += 1
        else:
            quiet = 0
            received.append(json.loads(message["data"]))
    await listener.aclose()
    aapl_days = [m["date"] for m in received if m["ticker"] == "AAPL"]
    assert aapl_days == ["2022-12-20", "2022-12-21", "2022-12-22", "2022-12-23"]
    assert all(m["type"] == "quote" for m in received)


async def test_live_polling_appends_new_bars_and_scores_due_forecasts(
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    redis: Redis,
    admin_headers: dict[str, str],
    bundled_bars: pd.DataFrame,
) -> None:
    goog = ticker_frame(bundled_bars, "GOOG").loc["2012-06-01":"2013-02-19"]
    csv = "date,open,high,low,close,volume\n" + "".join(
        f"{d.date()},{r.open},{r.high},{r.low},{r.close},{r.volume}\n" for d, r in goog.iterrows()
    )
    response = await client.post(
        "/api/v1/admin/bars/import",
        params={"ticker": "FEEDCO"},
        files={"file": ("feedco.csv", csv.encode(), "text/csv")},
        headers=admin_headers,
    )
    assert response.status_code == 201, response.text
    forecast = Forecast(
        ticker="FEEDCO", as_of=date(2013, 2, 19), horizon=1, q10=-0.02, q50=0.0, q90=0.02
    )
    await PredictionLogRepository(pool).record(
        [LoggedPrediction.of(forecast, "lstm", "1", "champion", True)]
    )

    after_close = datetime(2013, 2, 28, 22, 0, tzinfo=UTC)
    feed = PollingFeed(
        pool,
        YFinanceProvider(_recorded),
        ["FEEDCO"],
        rounds=1,
        now=lambda: after_close,
        sleep=_no_wait,
    )
    processed = await run_feed(feed, BarProcessor(pool, redis), asyncio.Event())
    stored = await pool.fetch(
        "SELECT date, close FROM bars WHERE ticker = 'FEEDCO' AND date > '2013-02-19' ORDER BY date"
    )
    assert len(stored) >= 5 and processed == 5  # the newest days of a catch-up, one by one
    assert stored[0]["date"] == date(2013, 2, 20)
    quote = json.loads(await redis.get("quote:FEEDCO"))
    assert quote["date"] == str(stored[-1]["date"]) and quote["close"] == pytest.approx(
        stored[-1]["close"]
    )
    outcome = await pool.fetchrow(
        """SELECT o.outcome_date, o.realised_log_return FROM prediction_log p
           JOIN prediction_outcomes o ON o.prediction_id = p.id WHERE p.ticker = 'FEEDCO'"""
    )
    assert outcome is not None and outcome["outcome_date"] == date(2013, 2, 20)  # scored on arrival


async def test_cli_replays_a_range_of_days(cli_env: None, redis: Redis) -> None:
    from tests.utils import invoke

    result = await invoke(
        "feed", "replay", "--start", "2022-12-27", "--end", "2022-12-28", "--interval", "0"
    )
    assert result.exit_code == 0, result.output
    assert "replayed 2 trading day(s)" in result.output
    assert json.loads(await redis.get("quote:KO"))["date"] == "2022-12-28"


async def _days_announced(listener: PubSub) -> list[str]:
    days, quiet = [], 0
    while quiet < 10:
        message = await listener.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message is None:
            quiet += 1
        else:
            quiet = 0
            days.append(json.loads(message["data"])["date"])
    await listener.aclose()
    return days


def _leader(pool: asyncpg.Pool, redis: Redis, interval_s: float) -> FeedLeader:
    return FeedLeader(
        redis,
        BarProcessor(pool, redis),
        lambda after: ReplayFeed(
            pool, date(2022, 12, 21), interval_s, end=date(2022, 12, 28), after=after
        ),
        lease_s=2.0,
        loop=False,
    )


async def test_one_replica_leads_the_feed_and_a_successor_resumes_after_its_cursor(
    pool: asyncpg.Pool, redis: Redis
) -> None:
    await redis.delete(FeedLeader.CURSOR_KEY, FeedLeader.LEASE_KEY)
    listener = redis.pubsub()
    await listener.subscribe(channels.DAYS)
    first, second = _leader(pool, redis, 0.5), _leader(pool, redis, 0.5)
    running = asyncio.create_task(first.run())
    await asyncio.wait_for(first.leading.wait(), timeout=10)
    follower = asyncio.create_task(second.run())

    async def two_days_played() -> bool:
        return (await redis.get(FeedLeader.CURSOR_KEY) or "") >= "2022-12-22"

    # two days played, half a second apart: the other has asked for the lease, and only waits
    assert await eventually(two_days_played, 10)
    assert not second.leading.is_set()
    running.cancel()  # the leading replica goes away mid-replay
    await asyncio.gather(running, return_exceptions=True)
    await asyncio.wait_for(follower, timeout=30)  # takes over and finishes the replay
    days = await _days_announced(listener)
    # every day, in order; only a day in flight at the handover may be played twice
    assert sorted(set(days)) == [
        "2022-12-21",
        "2022-12-22",
        "2022-12-23",
        "2022-12-27",
        "2022-12-28",
    ]
    assert days == sorted(days) and len(days) <= 6
    assert await redis.get(FeedLeader.CURSOR_KEY) == "2022-12-28"
    assert await redis.get(FeedLeader.LEASE_KEY) is None  # released when done


async def test_the_replay_moves_the_market_clock_and_queries_see_no_later_bar(
    client: httpx.AsyncClient, pool: asyncpg.Pool, redis: Redis
) -> None:
    feed = ReplayFeed(pool, start=date(2022, 12, 20), interval_s=0, end=date(2022, 12, 21))
    processor = BarProcessor(pool, redis)
    async for day, bars in feed.days():
        clock = await MarketClockRepository(pool).read()
        assert clock is not None and clock.day == day  # moved before the day is processed
        await processor.process(day, bars)
        response = await client.get("/api/v1/stocks/KO/quote")
        assert response.status_code == 200, response.text
        assert response.json()["date"] == day.isoformat()  # "today" is the replay day
    await MarketClockRepository(pool).stop()
    response = await client.get("/api/v1/stocks/KO/quote")
    assert response.json()["date"] == "2022-12-28"  # the real clock hides nothing


async def test_forecasts_resolve_as_the_replay_passes_their_horizon_within_one_run(
    pool: asyncpg.Pool,
) -> None:
    clock = MarketClockRepository(pool)
    log = PredictionLogRepository(pool)
    first = await clock.start_run(date(2022, 12, 20))
    made = Forecast(ticker="PG", as_of=date(2022, 12, 20), horizon=1, q10=-0.02, q50=0, q90=0.02)
    ahead = Forecast(ticker="PG", as_of=date(2022, 12, 22), horizon=1, q10=-0.02, q50=0, q90=0.02)
    logged = [LoggedPrediction.of(f, "hybrid", "clock-1", "champion", True) for f in (made, ahead)]
    assert await log.record(logged) == 1  # a forecast from after the clock's day is dropped
    await log.resolve_due("hybrid")
    assert not await log.resolved_losses("hybrid", 1, {"champion": "clock-1"})  # bar hidden

    await clock.advance(date(2022, 12, 21))
    assert await log.resolve_due("hybrid") == 1  # the outcome bar is "today" now
    losses = await log.resolved_losses("hybrid", 1, {"champion": "clock-1"})
    assert [(r.as_of, r.ticker) for r in losses] == [(date(2022, 12, 20), "PG")]

    # the replay loops: a new run starts clean, the earlier run's forecasts are not in it
    second = await clock.start_run(date(2022, 12, 20))
    assert second.run > first.run
    assert not await log.resolved_losses("hybrid", 1, {"champion": "clock-1"})
    assert await log.record(logged[:1]) == 1  # the same forecast again, logged for this run
    listed = [r for r in await log.for_ticker("PG", 1, "hybrid", 10) if r["version"] == "clock-1"]
    assert [(r["as_of"], r["outcome_date"]) for r in listed] == [(date(2022, 12, 20), None)]
