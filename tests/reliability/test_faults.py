"""Faults while the API is in use: Redis crashes and comes back, Postgres crashes mid-writes and
comes back. Each test starts servers of its own (the embedded ones, in a temporary folder), so
killing them disturbs nothing else in the session.

A Serve model replica killed under load is covered where the Serve app runs:
tests/serving/test_serve_app.py::test_a_killed_replica_is_replaced_while_requests_succeed.

What a Redis outage degrades, and what it must not (Redis down → back):

- sign-in, token checks, sign-out: work (Postgres is the session record) → work, sessions
  started during the outage included (they are cached again);
- rate limits: per process, same algorithm → shared again;
- login lockout: paused, the per-address auth limit remains → counts again;
- market and prediction caches: bypassed, answers computed each time → used again;
- portfolio writes and their idempotency: unaffected (Postgres);
- WebSocket pushes: paused, the sockets stay open → resume;
- `/readyz`: 200 `degraded` → 200 `ready`.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import connect

from api.app import create_app
from api.channels import QUOTES
from api.db.migrate import upgrade
from api.settings import Settings
from tests.api.test_ws import receive
from tests.conftest import sign_up
from tests.live_server import serving
from tests.reliability.servers import CrashablePostgres, CrashableRedis
from tests.utils import eventually

# ----------------------------------------------------------------------------------- Redis


@dataclass
class RedisOutageApi:
    client: httpx.AsyncClient
    host: str
    redis: CrashableRedis
    app: Any


@pytest.fixture
async def outage_api(
    settings: Settings, first_ingest: object, tmp_path: Path
) -> AsyncIterator[RedisOutageApi]:
    """The API over the session's database and a Redis of its own, on a real loopback server
    (sockets included), with limits small enough to watch them work."""
    redis = CrashableRedis(tmp_path)
    redis.start()
    app = create_app(
        settings.model_copy(
            update={
                "redis_url": redis.url,
                "rate_limit_default_per_min": 600,
                "rate_limit_auth_per_min": 12,
                "ws_heartbeat_s": 0.5,
            }
        )
    )
    try:
        async with (
            serving(app) as host,
            httpx.AsyncClient(base_url=f"http://{host}", timeout=30) as client,
        ):
            yield RedisOutageApi(client, host, redis, app)
    finally:
        redis.stop()


def _session_id(headers: dict[str, str]) -> uuid.UUID:
    claims = jwt.decode(token(headers), options={"verify_signature": False})
    return uuid.UUID(claims["sid"])


async def _traffic(client: httpx.AsyncClient, headers: dict[str, str], portfolio: str) -> None:
    """One round of what a signed-in user does; every answer must be a success."""
    key = uuid.uuid4().hex
    deposit = {"type": "deposit", "amount": "10", "date": "2022-06-01"}
    write = {**headers, "Idempotency-Key": key}
    transactions = f"/api/v1/portfolio/{portfolio}/transactions"
    for method, url, options in [
        ("GET", "/healthz", {}),
        ("GET", "/api/v1/users/me", {"headers": headers}),
        ("GET", "/api/v1/stocks", {"params": {"q": "apple"}, "headers": headers}),
        ("GET", "/api/v1/stocks/AAPL/quote", {"headers": headers}),
        (
            "GET",
            "/api/v1/stocks/KO/history",
            {"params": {"start": "2022-01-01"}, "headers": headers},
        ),
        ("GET", "/api/v1/market/overview", {"headers": headers}),
        ("POST", transactions, {"json": deposit, "headers": write}),
    ]:
        response = await client.request(method, url, **options)
        assert response.status_code < 300, (url, response.text)
    replayed = await client.post(transactions, json=deposit, headers=write)
    assert replayed.status_code == 200 and replayed.headers["Idempotent-Replayed"] == "true"


async def test_the_api_keeps_answering_while_redis_is_down_and_recovers(
    outage_api: RedisOutageApi,
) -> None:
    client, redis = outage_api.client, outage_api.redis
    email = f"redis-outage-{uuid.uuid4().hex[:8]}@example.com"
    before = await sign_up(client, email)
    portfolio = await client.post("/api/v1/portfolio", json={"name": "Fault"}, headers=before)
    portfolio_id = portfolio.json()["id"]
    await _traffic(client, before, portfolio_id)
    quote_rate = await client.get("/api/v1/stocks/AAPL/quote", headers=before)
    assert "RateLimit-Remaining" in quote_rate.headers

    async with connect(f"ws://{outage_api.host}/ws/real-time?token={token(before)}") as ws:
        await receive(ws, "welcome")
        await ws.send(json.dumps({"action": "subscribe", "tickers": ["AAPL"]}))
        await receive(ws, "subscribed")

        redis.crash()

        # --- Redis is down: everything answers
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        assert ready.json()["checks"]["redis"].startswith("error")
        for _ in range(3):
            await _traffic(client, before, portfolio_id)
        limited = await client.get("/api/v1/stocks/AAPL/quote", headers=before)
        assert limited.status_code == 200 and "RateLimit-Remaining" in limited.headers
        during = await sign_up(client, email)  # a new session, recorded in Postgres only
        await _traffic(client, during, portfolio_id)
        ended = await sign_up(client, email)
        assert (await client.post("/api/v1/auth/logout", headers=ended)).status_code == 204
        refused = await client.get("/api/v1/users/me", headers=ended)
        assert refused.status_code == 401  # signing out works without Redis
        # brute force still meets the per-address auth limit (kept per process meanwhile)
        statuses = []
        for _ in range(30):
            wrong = {"email": email, "password": "not the password at all"}
            statuses.append((await client.post("/api/v1/auth/login", json=wrong)).status_code)
            if statuses[-1] == 429:
                break
        assert statuses[-1] == 429 and set(statuses) <= {401, 429}
        await ws.send(json.dumps({"action": "ping"}))
        await receive(ws, "pong")  # the socket stays open

        # --- Redis is back on the same socket
        redis.start()

        async def ready_again() -> bool:
            return (await client.get("/readyz")).json()["status"] == "ready"

        assert await eventually(ready_again)
        assert await eventually(_listening(outage_api.app))
        async with Redis.from_url(redis.url, decode_responses=True) as direct:
            for pattern in ("rl:*", "market:*"):  # whatever the append-only file brought back
                await direct.delete(*[key async for key in direct.scan_iter(pattern)] or ["-"])
            await _traffic(client, before, portfolio_id)
            await _traffic(client, during, portfolio_id)  # a session from the outage works
            assert await direct.exists(f"session:{_session_id(during)}")  # and is cached again
            assert (await client.get("/api/v1/users/me", headers=ended)).status_code == 401
            # the address's auth budget is Redis's again (the local one spent above is not)
            after = await sign_up(client, email)
            await _traffic(client, after, portfolio_id)
            assert [key async for key in direct.scan_iter("rl:default:user:*")]  # shared limits
            assert [key async for key in direct.scan_iter("market:*")]  # the cache is used
            live = {"type": "quote", "ticker": "AAPL", "date": "2030-01-02", "close": 1.0}
            await direct.publish(QUOTES, json.dumps(live))  # as the market feed does
        assert (await receive(ws, "quote"))["date"] == "2030-01-02"  # pushes resume


def token(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


def _listening(app: Any) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return app.state.hub.listening.is_set()

    return check


# -------------------------------------------------------------------------------- Postgres


@dataclass
class Write:
    key: str  # its Idempotency-Key
    amount: int
    status: int = 0  # the first answer
    transaction_id: str | None = None


@pytest.fixture
async def crashable_api(
    settings: Settings, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, CrashablePostgres]]:
    """The API (in-process) over a Postgres of its own, schema only, and the session's Redis (a
    keyspace of its own)."""
    postgres = CrashablePostgres(tmp_path)
    database_url = postgres.start()
    conn = await asyncpg.connect(database_url)
    try:
        await upgrade(conn)
    finally:
        await conn.close()
    redis_url = f"{settings.redis_url}?db=8"
    app = create_app(
        settings.model_copy(update={"database_url": database_url, "redis_url": redis_url})
    )
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                yield client, postgres
    finally:
        postgres.stop()


WRITES = 60


async def test_a_postgres_crash_loses_no_acknowledged_transaction(
    crashable_api: tuple[httpx.AsyncClient, CrashablePostgres],
) -> None:
    """Deposits stream in while Postgres crashes and restarts: each is answered 201 or 503 (never
    500), writes succeed again as soon as it is back (the pool replaces dead connections), and
    a client retrying the unanswered ones with their Idempotency-Key ends with every deposit
    stored exactly once."""
    client, postgres = crashable_api
    headers = await sign_up(client, "pg-crash@example.com")
    portfolio = await client.post("/api/v1/portfolio", json={"name": "Crash"}, headers=headers)
    path = f"/api/v1/portfolio/{portfolio.json()['id']}/transactions"
    writes = [Write(uuid.uuid4().hex, amount) for amount in range(1, WRITES + 1)]
    acknowledged_ten, refused_three = asyncio.Event(), asyncio.Event()

    async def post(write: Write) -> httpx.Response:
        body = {"type": "deposit", "amount": str(write.amount), "date": "2022-06-01"}
        return await client.post(path, json=body, headers={**headers, "Idempotency-Key": write.key})

    async def writer() -> None:
        for write in writes:
            response = await post(write)
            write.status = response.status_code
            if response.status_code == 201:
                write.transaction_id = response.json()["id"]
            else:
                assert response.status_code == 503, response.text
                assert response.json()["code"] == "database_unavailable"
                assert response.headers["Retry-After"]
            answered = [w for w in writes if w.status]
            if sum(w.status == 201 for w in answered) >= 10:
                acknowledged_ten.set()
            if sum(w.status == 503 for w in answered) >= 3:
                refused_three.set()
            await asyncio.sleep(0.02)

    writing = asyncio.create_task(writer())
    await asyncio.wait_for(acknowledged_ten.wait(), 30)
    await asyncio.to_thread(postgres.crash)  # requests keep coming meanwhile
    await asyncio.wait_for(refused_three.wait(), 30)
    ready = await client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["postgres"].startswith("error")
    assert (await client.get("/healthz")).status_code == 200
    await asyncio.to_thread(postgres.restart)
    await asyncio.wait_for(writing, 60)

    statuses = [w.status for w in writes]
    assert statuses[-5:] == [201] * 5, statuses  # the pool reconnected by itself
    acknowledged = {w.transaction_id for w in writes if w.status == 201}
    for write in writes:  # the client retries what was refused, with the same key
        if write.status != 201:
            retried = await post(write)
            assert retried.status_code in (200, 201), retried.text
    ledger = await client.get(path, params={"limit": 100}, headers=headers)
    stored = {t["id"]: int(t["amount"]) for t in ledger.json()["items"]}
    assert acknowledged <= set(stored)  # nothing acknowledged was lost
    assert sorted(stored.values()) == list(range(1, WRITES + 1))  # nothing stored twice
