"""Probes, request ids and problem+json basics."""

from __future__ import annotations

from datetime import date

import asyncpg
import httpx
from redis.asyncio import Redis

from api.db.clock import MarketClockRepository
from api.services.health import readiness


async def test_healthz_and_readyz_check_real_services(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert (body["checks"]["postgres"], body["checks"]["redis"]) == ("ok", "ok")
    # the test data ends years before the last real session: reported, but with the feed off
    # by choice the replica is still plainly ready
    assert body["checks"]["feed"].startswith("behind: newest bar ")
    assert body["status"] == "ready" and body["feed"]["mode"] == "off"
    assert body["feed"]["sessions_behind"] > 250 and not body["feed"]["healthy"]


async def test_readiness_judges_data_currency_by_the_products_clock(
    pool: asyncpg.Pool, redis: Redis
) -> None:
    live = await readiness(pool, redis, "live")
    assert live.status == "degraded" and live.checks["feed"].startswith("behind")
    clock = MarketClockRepository(pool)
    try:
        await clock.start_run(date(2022, 12, 21))  # a replay: its day is the last session
        replay = await readiness(pool, redis, "replay")
    finally:
        await clock.stop()
    assert replay.status == "ready" and replay.checks["feed"] == "ok"
    assert replay.feed is not None
    assert (replay.feed.clock, replay.feed.newest_bar) == (date(2022, 12, 21),) * 2
    assert replay.feed.sessions_behind == 0 and replay.feed.healthy


async def test_request_id_is_echoed_or_generated(client: httpx.AsyncClient) -> None:
    echoed = await client.get("/healthz", headers={"X-Request-ID": "abc-123-xyz"})
    assert echoed.headers["x-request-id"] == "abc-123-xyz"
    hostile = await client.get("/healthz", headers={"X-Request-ID": 'x";drop table--'})
    assert hostile.headers["x-request-id"] != 'x";drop table--'
    assert len(hostile.headers["x-request-id"]) == 32


async def test_unknown_route_is_problem_json(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/nope")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 404 and body["code"] == "not_found" and body["instance"]
