"""Live polling on the exchange calendar, through the real yfinance provider code on answers in
yfinance's `history()` shape: a split since the bundle keeps history continuous and fires no
alert, an unfinished session's bar is provisional until the catch-up replaces it, nothing is
fetched while the market is closed, and 429s back off with jitter, visibly."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, timedelta

import asyncpg
import httpx
import numpy as np
import pandas as pd
import pytest
from redis.asyncio import Redis

from api.app import create_app
from api.db.clock import FeedStatusRepository
from api.feed import BACKOFF_BASE_S, CATCH_UP_DELAY, BarProcessor, PollingFeed, run_feed
from api.services.alert_evaluator import AlertEvaluator
from api.services.health import readiness
from api.services.notifications import Notifier
from api.settings import Settings
from features.live import YFinanceProvider
from features.sessions import session_close, sessions_between
from tests.utils import copy_instrument

NEW_YORK = "America/New_York"
COPIES = ["WMTS", "CALCO", "RATECO", "LATECO"]


def history_answer(rows: dict[date, tuple[float, float, float, float]]) -> pd.DataFrame:
    """(date -> open, close, split, dividend) as yfinance's `history(actions=True)` frame."""
    days = sorted(rows)
    frame = pd.DataFrame(
        {
            "Open": [rows[d][0] for d in days],
            "High": [max(rows[d][0], rows[d][1]) * 1.01 for d in days],
            "Low": [min(rows[d][0], rows[d][1]) * 0.99 for d in days],
            "Close": [rows[d][1] for d in days],
            "Volume": [5_000_000.0 for _ in days],
            "Dividends": [rows[d][3] for d in days],
            "Stock Splits": [rows[d][2] for d in days],
        },
        index=pd.DatetimeIndex([pd.Timestamp(d).tz_localize(NEW_YORK) for d in days], name="Date"),
    )
    return frame


class Recorded:
    """A yfinance fetch that answers from a recorded frame (the window applied as Yahoo does)
    and counts its calls; `fail` makes the next calls raise what Yahoo's client raises."""

    def __init__(self, answer: pd.DataFrame) -> None:
        self.answer = answer
        self.calls = 0
        self.fail: Callable[[], Exception] | None = None

    def __call__(self, symbol: str, start: date, end: date) -> pd.DataFrame:
        self.calls += 1
        if self.fail is not None:
            raise self.fail()
        index = self.answer.index.tz_localize(None).normalize()
        inside = (index >= pd.Timestamp(start)) & (index <= pd.Timestamp(end))
        return self.answer[inside]


class SimulatedTime:
    """The feed's time source: sleeping moves the clock on, so a weekend passes at once."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)
        await asyncio.sleep(0)


@pytest.fixture(autouse=True)
async def copies_removed(pool: asyncpg.Pool) -> AsyncIterator[None]:
    """The instruments these tests copy are removed afterwards (bars, actions and adjustments
    go with them), and the feed's health is forgotten, so the session's other tests see the
    bundled universe and no provider history."""
    yield
    await pool.execute("DELETE FROM alerts WHERE ticker = ANY($1::text[])", COPIES)
    await pool.execute("DELETE FROM instruments WHERE ticker = ANY($1::text[])", COPIES)
    await pool.execute("DELETE FROM feed_status")


async def _instrument_from(pool: asyncpg.Pool, source: str, ticker: str) -> None:
    """A new equity holding a copy of a bundled ticker's whole history, removed afterwards."""
    assert ticker in COPIES
    await copy_instrument(pool, source, ticker)


async def _move_alert(client: httpx.AsyncClient, headers: dict[str, str], ticker: str) -> str:
    response = await client.post(
        "/api/v1/users/me/alerts",
        json={"kind": "move", "ticker": ticker, "direction": "either", "percent": 20},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def test_a_split_since_the_bundle_keeps_history_continuous_and_fires_no_alert(
    client: httpx.AsyncClient, pool: asyncpg.Pool, redis: Redis, user_headers: dict[str, str]
) -> None:
    ticker = "WMTS"
    await _instrument_from(pool, "WMT", ticker)
    last = await pool.fetchrow(
        "SELECT date, close FROM bars WHERE ticker = $1 ORDER BY date DESC LIMIT 1", ticker
    )
    before = await pool.fetchrow(
        "SELECT date, close FROM bars WHERE ticker = $1 AND date < $2 ORDER BY date DESC LIMIT 1",
        ticker,
        last["date"],
    )
    alert_id = await _move_alert(client, user_headers, ticker)

    # Yahoo's answer from the overlap bar on, adjusted as of its newest bar (2024-02-28): the
    # 3-for-1 split of 2024-02-26 divides every earlier price by 3, and the dividends since
    # lower them a little more; the raw price walks gently from ~142 (~47 adjusted) to ~58.
    sessions = sessions_between(last["date"], date(2024, 2, 28))
    path = np.linspace(last["close"] / 3 * 0.985, 58.6, len(sessions))
    rows = {
        d: (p * 0.998, p, 3.0 if d == date(2024, 2, 26) else 0.0, 0.0)
        for d, p in zip(sessions, path, strict=True)
    }
    rows[date(2023, 3, 16)] = (*rows[date(2023, 3, 16)][:3], 0.19)  # an ex-dividend day
    answer = Recorded(history_answer(rows))
    time = SimulatedTime(session_close(date(2024, 2, 28)) + CATCH_UP_DELAY)
    feed = PollingFeed(
        pool, YFinanceProvider(answer), [ticker], rounds=1, now=time, sleep=time.sleep
    )
    processor = BarProcessor(pool, redis, AlertEvaluator(pool, Notifier(pool, redis), None))
    processed = await run_feed(feed, processor, asyncio.Event())
    assert processed == 5  # after a long gap, the newest days are announced one by one

    stored = await pool.fetch(
        "SELECT date, close, final FROM bars WHERE ticker = $1 AND date >= $2 ORDER BY date",
        ticker,
        before["date"],
    )
    closes = pd.Series([r["close"] for r in stored])
    assert all(r["final"] for r in stored)
    assert stored[-1]["close"] == pytest.approx(58.6)
    # no jump from the bundle's last bar on (the split day included), and the bundle's own
    # last step is kept exactly
    assert float(np.abs(np.log(closes[1:]).diff().dropna()).max()) < 0.02
    assert closes[1] / closes[0] == pytest.approx(last["close"] / before["close"])
    factor = rows[last["date"]][1] / last["close"]
    rescaled = await pool.fetchval(
        "SELECT close FROM bars WHERE ticker = $1 AND date = $2", ticker, before["date"]
    )
    assert rescaled == pytest.approx(before["close"] * factor)
    adjustment = await pool.fetchrow(
        "SELECT price_factor, volume_factor, reason FROM bar_adjustments WHERE ticker = $1",
        ticker,
    )
    assert adjustment["price_factor"] == pytest.approx(factor)
    assert adjustment["volume_factor"] == 3.0
    assert "2024-02-26 split 3:1" in adjustment["reason"]
    actions = await pool.fetch(
        "SELECT ex_date, split, dividend FROM corporate_actions WHERE ticker = $1 ORDER BY 1",
        ticker,
    )
    assert [(a["ex_date"], a["split"], a["dividend"]) for a in actions] == [
        (date(2023, 3, 16), 1.0, 0.19),
        (date(2024, 2, 26), 3.0, 0.0),
    ]
    checked = await pool.fetchrow(
        "SELECT last_checked, fired_count FROM alerts WHERE id = $1", uuid.UUID(alert_id)
    )
    assert checked["last_checked"] == date(2024, 2, 28)  # evaluated through the split day
    assert checked["fired_count"] == 0  # a 67 % "crash" that never happened fires nothing

    # a second update finds the final bar of the last session stored: no call, no change
    calls = answer.calls
    time.now = session_close(date(2024, 2, 28)) + CATCH_UP_DELAY
    again = PollingFeed(
        pool, YFinanceProvider(answer), [ticker], rounds=1, now=time, sleep=time.sleep
    )
    await run_feed(again, processor, asyncio.Event())
    assert answer.calls == calls


async def test_polling_follows_the_exchange_calendar(pool: asyncpg.Pool, redis: Redis) -> None:
    ticker = "CALCO"
    await _instrument_from(pool, "KO", ticker)
    await pool.execute(
        "DELETE FROM bars WHERE ticker = $1 AND date > '2022-12-23'", ticker
    )  # stored up to Friday 2022-12-23
    friday = float(
        await pool.fetchval(
            "SELECT close FROM bars WHERE ticker = $1 AND date = '2022-12-23'", ticker
        )
    )
    rows = {date(2022, 12, 23): (friday, friday, 0.0, 0.0)}
    answer = Recorded(history_answer(rows))
    # Saturday noon in New York; Monday 2022-12-26 is a market holiday
    time = SimulatedTime(datetime(2022, 12, 24, 17, 0, tzinfo=UTC))
    feed = PollingFeed(
        pool, YFinanceProvider(answer), [ticker], poll_s=600, rounds=1, now=time, sleep=time.sleep
    )
    processor = BarProcessor(pool, redis)
    # The Friday session's catch-up is due at once; then nothing until Tuesday's open.
    await run_feed(feed, processor, asyncio.Event())
    assert answer.calls == 0  # the final bar of the last session is stored: nothing to fetch
    tuesday_open = datetime(2022, 12, 27, 14, 30, tzinfo=UTC)
    assert time.now == tuesday_open  # slept through the weekend and the holiday in one wait

    # Tuesday, mid-session: today's bar is stored provisional
    time.now = datetime(2022, 12, 27, 17, 0, tzinfo=UTC)
    answer.answer = history_answer({**rows, date(2022, 12, 27): (friday, friday * 1.01, 0, 0)})
    feed = PollingFeed(
        pool, YFinanceProvider(answer), [ticker], poll_s=600, rounds=1, now=time, sleep=time.sleep
    )
    assert await run_feed(feed, processor, asyncio.Event()) == 1
    bar = await pool.fetchrow(
        "SELECT close, final FROM bars WHERE ticker = $1 AND date = '2022-12-27'", ticker
    )
    assert (bar["final"], bar["close"]) == (False, pytest.approx(friday * 1.01))
    assert time.slept[-1] == 600  # the next poll, while the session trades

    # after the close: one catch-up replaces it with the final bar, then quiet until the open
    time.now = session_close(date(2022, 12, 27)) + CATCH_UP_DELAY
    answer.answer = history_answer({**rows, date(2022, 12, 27): (friday, friday * 1.02, 0, 0)})
    feed = PollingFeed(
        pool, YFinanceProvider(answer), [ticker], poll_s=600, rounds=1, now=time, sleep=time.sleep
    )
    calls = answer.calls
    await run_feed(feed, processor, asyncio.Event())
    bar = await pool.fetchrow(
        "SELECT close, final FROM bars WHERE ticker = $1 AND date = '2022-12-27'", ticker
    )
    assert (bar["final"], bar["close"]) == (True, pytest.approx(friday * 1.02))
    assert answer.calls == calls + 1  # the catch-up
    # and the next wait lasts until the next open: no calls overnight
    assert time.now == datetime(2022, 12, 28, 14, 30, tzinfo=UTC)


async def test_a_catch_up_retries_with_backoff_until_the_final_bar_is_published(
    pool: asyncpg.Pool, redis: Redis
) -> None:
    ticker = "LATECO"
    await _instrument_from(pool, "KO", ticker)
    await pool.execute("DELETE FROM bars WHERE ticker = $1 AND date > '2022-12-23'", ticker)
    friday = history_answer({date(2022, 12, 23): (60.0, 60.0, 0.0, 0.0)})
    answer = Recorded(friday)  # Tuesday's final bar is not out yet at the first catch-up
    time = SimulatedTime(session_close(date(2022, 12, 27)) + CATCH_UP_DELAY)
    published = history_answer(
        {date(2022, 12, 23): (60.0, 60.0, 0.0, 0.0), date(2022, 12, 27): (60.0, 61.0, 0.0, 0.0)}
    )

    async def sleep(seconds: float) -> None:
        await time.sleep(seconds)
        if len(time.slept) == 2:  # published between the second and third attempts
            answer.answer = published

    feed = PollingFeed(pool, YFinanceProvider(answer), [ticker], rounds=3, now=time, sleep=sleep)
    await run_feed(feed, BarProcessor(pool, redis), asyncio.Event())
    assert answer.calls == 3  # two incomplete catch-ups, then the one that got the bar
    assert time.slept[:2] == [BACKOFF_BASE_S, 2 * BACKOFF_BASE_S]  # backing off
    assert time.now == datetime(2022, 12, 28, 14, 30, tzinfo=UTC)  # then quiet until the open
    final = await pool.fetchval(
        "SELECT final FROM bars WHERE ticker = $1 AND date = '2022-12-27'", ticker
    )
    assert final is True


async def test_rate_limits_back_off_with_jitter_and_show_in_the_feed_status(
    pool: asyncpg.Pool, redis: Redis, settings: Settings, metrics_auth: dict[str, str]
) -> None:
    from yfinance.exceptions import YFRateLimitError

    ticker = "RATECO"
    await _instrument_from(pool, "PEP", ticker)
    await pool.execute("DELETE FROM bars WHERE ticker = $1 AND date > '2022-12-20'", ticker)
    answer = Recorded(history_answer({}))
    answer.fail = YFRateLimitError
    time = SimulatedTime(datetime(2022, 12, 22, 17, 0, tzinfo=UTC))  # a Thursday session
    feed = PollingFeed(
        pool, YFinanceProvider(answer), [ticker], poll_s=60, rounds=4, now=time, sleep=time.sleep
    )
    await run_feed(feed, BarProcessor(pool, redis), asyncio.Event())
    assert answer.calls == 4
    for attempt, waited in enumerate(time.slept):  # full jitter under a doubling ceiling
        assert 0 <= waited <= BACKOFF_BASE_S * 2**attempt
    status = await FeedStatusRepository(pool).read()
    assert status is not None and status.failures == 4
    assert status.last_attempt is not None
    assert status.last_success is None or status.last_success < status.last_attempt
    assert "rate limited" in (status.last_error or "")
    # visible beyond the log: the readiness of a live replica, and the Prometheus gauges of a
    # fresh one
    ready = await readiness(pool, redis, "live")
    assert ready.status == "degraded"
    assert ready.checks["feed"].startswith("failing: 4 round(s) of yfinance")
    assert ready.feed is not None and ready.feed.failures == 4
    assert "rate limited" in (ready.feed.last_error or "")
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as fresh,
    ):
        scraped = (await fresh.get("/metrics", headers=metrics_auth)).text
    assert 'stockcopilot_feed_provider_failures{provider="yfinance"} 4.0' in scraped
    assert 'stockcopilot_feed_up{mode="off"} 0.0' in scraped

    answer.fail = None  # the provider recovers: the next round succeeds and the count resets
    answer.answer = history_answer({date(2022, 12, 22): (170.0, 171.0, 0.0, 0.0)})
    feed = PollingFeed(
        pool, YFinanceProvider(answer), [ticker], poll_s=60, rounds=1, now=time, sleep=time.sleep
    )
    await run_feed(feed, BarProcessor(pool, redis), asyncio.Event())
    status = await FeedStatusRepository(pool).read()
    assert status is not None and status.failures == 0 and status.last_error is None
    assert status.last_success is not None and not math.isnan(status.last_success.timestamp())
