"""Readiness: whether this replica can serve, from what its backing services answer, and how
current the market data is (the feed's health, also exported as Prometheus gauges)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Literal

import asyncpg
from redis.asyncio import Redis

from api.db.clock import FeedStatusRepository, MarketClockRepository
from api.db.market import BarRepository
from api.db.pool import ping
from api.db.warmup import WarmupRepository
from api.schemas import FeedHealth, Readiness, WarmupTask
from features.sessions import market_state, sessions_between

CHECK_TIMEOUT_S = 2.0
MAX_SESSIONS_BEHIND = 1  # the last session's bars may still be on their way


async def feed_health(pool: asyncpg.Pool, mode: Literal["replay", "live", "off"]) -> FeedHealth:
    """How current the data is by the product's clock, and how the provider is doing."""
    clock = await MarketClockRepository(pool).read()
    status = await FeedStatusRepository(pool).read()
    async with pool.acquire() as conn:
        newest = await BarRepository(conn).last_date_any()
    last_session = clock.day if clock is not None else market_state().last_completed
    behind = (
        0 if newest is None else len(sessions_between(newest + timedelta(days=1), last_session))
    )
    # only the live feed depends on the provider; a replay's data is as current as its clock
    failing = mode == "live" and status is not None and status.failures > 0
    lag = (
        None
        if status is None or status.last_success is None
        else (datetime.now(UTC) - status.last_success).total_seconds()
    )
    return FeedHealth(
        mode=mode,
        provider=None if status is None else status.provider,
        clock=None if clock is None else clock.day,
        newest_bar=newest,
        last_session=last_session,
        sessions_behind=behind,
        last_success=None if status is None else status.last_success,
        lag_s=lag,
        failures=0 if status is None else status.failures,
        last_error=None if status is None else status.last_error,
        healthy=newest is not None and behind <= MAX_SESSIONS_BEHIND and not failing,
    )


async def readiness(
    pool: asyncpg.Pool, redis: Redis, mode: Literal["replay", "live", "off"] = "off"
) -> Readiness:
    """Ready when Postgres answers, `unavailable` otherwise; `degraded` when Redis does not
    (the API still serves, with caching and rate limits per replica) or when the market data
    is failing or behind (still served, marked `stale`)."""
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(ping(pool), CHECK_TIMEOUT_S)
        checks["postgres"] = "ok"
    except Exception as exc:  # any failure means "not ready"; the type is reported
        checks["postgres"] = f"error: {type(exc).__name__}"
    try:
        await asyncio.wait_for(redis.ping(), CHECK_TIMEOUT_S)
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"error: {type(exc).__name__}"
    feed = None
    warming: list[WarmupTask] = []
    if checks["postgres"] == "ok":
        try:
            feed = await asyncio.wait_for(feed_health(pool, mode), CHECK_TIMEOUT_S)
            checks["feed"] = "ok" if feed.healthy else _feed_problem(feed)
        except Exception as exc:
            checks["feed"] = f"error: {type(exc).__name__}"
        try:
            warming = await asyncio.wait_for(_warmup(pool), CHECK_TIMEOUT_S)
            checks["warmup"] = _warmup_summary(warming)
        except Exception as exc:
            checks["warmup"] = f"error: {type(exc).__name__}"
    status: Literal["ready", "degraded", "unavailable"] = "unavailable"
    if checks["postgres"] == "ok":
        feed_ok = checks["feed"] == "ok" or mode == "off"  # no feed by choice: reported only
        status = "ready" if checks["redis"] == "ok" and feed_ok else "degraded"
    return Readiness(status=status, checks=checks, feed=feed, warming=warming)


async def _warmup(pool: asyncpg.Pool) -> list[WarmupTask]:
    return [WarmupTask(**vars(t)) for t in await WarmupRepository(pool).tasks()]


def _warmup_summary(tasks: list[WarmupTask]) -> str:
    """`ok` when nothing is left; otherwise what is still warming up (serving goes on: the
    classical champion answers while network models train, similarity search waits for its
    index)."""
    failed = [t.name for t in tasks if t.state == "failed"]
    open_ = [
        f"{t.name} ({t.detail or t.state})" for t in tasks if t.state in ("pending", "running")
    ]
    parts = ([f"warming: {', '.join(open_)}"] if open_ else []) + (
        [f"failed: {', '.join(failed)}"] if failed else []
    )
    return "; ".join(parts) or "ok"


def _feed_problem(feed: FeedHealth) -> str:
    if feed.failures and feed.mode == "live":
        return f"failing: {feed.failures} round(s) of {feed.provider}: {feed.last_error}"
    if feed.newest_bar is None:
        return "no bars stored"
    return f"behind: newest bar {feed.newest_bar}, {feed.sessions_behind} session(s) old"
