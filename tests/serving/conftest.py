"""An API serving the session's tiny registry (tests/model_registry.py), and A/B callers."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date

import asyncpg
import httpx
import pytest
from mlflow import MlflowClient
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from api.app import create_app
from api.db.ab import AbWeightRepository
from api.db.users import UserRepository
from api.security.crypto import Keyring
from api.services.ab import bucket
from api.services.auth import AuthService, create_account
from api.settings import Settings
from serving.local import LocalPredictor
from tests.utils import eventually

CHALLENGER_WEIGHTS = {"hybrid": 0.5}


@pytest.fixture(scope="session")
async def api(
    settings: Settings,
    first_ingest: object,
    serving_registry: MlflowClient,
    user_headers: dict[str, str],
    pool: asyncpg.Pool,
) -> AsyncIterator[httpx.AsyncClient]:
    """The API over the in-process predictor of this registry, signed in as the default user;
    the hybrid challenger gets half the traffic (stored as `stockcopilot ab set` stores it)."""
    async with pool.acquire() as conn:
        for family, weight in CHALLENGER_WEIGHTS.items():
            await AbWeightRepository(conn).set(family, weight, "tests", "serving fixture")
    app = create_app(settings, LocalPredictor(serving_registry))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=user_headers
        ) as client:
            yield client


Caller = tuple[uuid.UUID, dict[str, str]]


async def logged(
    pool: asyncpg.Pool,
    tickers: list[str],
    rows: int,
    as_of: date | None = None,
    family: str | None = None,
) -> None:
    """Wait (with a deadline) until the API's batched writer has logged `rows` forecasts of
    `tickers` (made from `as_of`'s bars by `family`, if given): the log is written off the
    request path, a moment after the answer."""

    async def written() -> bool:
        found = await pool.fetchval(
            """SELECT count(*) FROM prediction_log
               WHERE ticker = ANY($1::text[]) AND ($2::date IS NULL OR as_of = $2)
                 AND ($3::text IS NULL OR family = $3)""",
            tickers,
            as_of,
            family,
        )
        return found >= rows

    assert await eventually(written), f"fewer than {rows} forecasts of {tickers} were logged"


@pytest.fixture(scope="session")
async def mint_user(
    settings: Settings, pool: asyncpg.Pool
) -> AsyncIterator[Callable[[], Awaitable[Caller]]]:
    """Signed-in users made in bulk for A/B tests: a real account and session each, created
    through the repositories and AuthService (no password, so no argon2 cost per user)."""
    keyring = Keyring.from_settings(settings)
    redis = Redis.from_url(settings.redis_url or "", decode_responses=True)
    auth = AuthService(pool, redis, settings, keyring)

    async def mint() -> Caller:
        email = f"caller-{uuid.uuid4().hex}@example.com"
        user = await create_account(UserRepository(pool), keyring, email, "A/B caller", None)
        pair = await auth.start_session(user, "tests", None)
        return user.id, {"Authorization": f"Bearer {pair.access_token}"}

    yield mint
    await redis.aclose()


async def caller_on(
    mint: Callable[[], Awaitable[Caller]], family: str, challenger: bool, weight: float = 0.5
) -> dict[str, str]:
    """Headers of a user the sticky router sends to the wanted variant at `weight`."""
    for _ in range(200):
        user_id, headers = await mint()
        if (bucket(f"user:{user_id}", family) < weight) == challenger:
            return headers
    raise AssertionError("no caller found")


async def last_rollback(pool: asyncpg.Pool, family: str, broken: str) -> asyncpg.Record:
    """The automatic rollback of `broken` in the alias history, waited for (the alias moves
    back first, the audit row follows)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        event = await pool.fetchrow(
            """SELECT from_version, to_version, reason FROM model_alias_events
               WHERE actor = 'auto-rollback' AND model = $1 AND from_version = $2
               ORDER BY id DESC LIMIT 1""",
            f"stockcopilot-{family}",
            broken,
        )
        if event is not None:
            return event
        await asyncio.sleep(0.2)
    raise AssertionError(f"no rollback of {family} version {broken} recorded")


async def next_notification(pubsub: PubSub, redis: Redis, seconds: int = 20) -> dict | None:
    """The next message published on a subscribed channel (None after `seconds`); closes both."""
    message = None
    for _ in range(seconds):
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
        if message:
            break
    await pubsub.aclose()
    await redis.aclose()
    return json.loads(message["data"]) if message else None
