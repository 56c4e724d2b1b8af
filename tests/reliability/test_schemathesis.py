"""Schemathesis over the whole OpenAPI schema, signed in: no server errors, and every response is
what the schema documents (status code, content type, body schema, headers).

The real app — its lifespan, an in-process predictor over the session's tiny registry, and the
embedded Postgres and Redis — is served by uvicorn on a loopback port in its own thread, and
schemathesis sends real HTTP to it. Inputs come from the schema in every mode schemathesis has:
examples, boundary values ("coverage") and random data, valid and invalid, with a fixed seed and
a bounded number of random examples per operation.

The fuzzer writes whatever the API lets it write (imports, portfolios, alerts, ...), so the app
runs on a database of its own (the bundled data ingested afresh) and a Redis database of its own:
nothing it does can change what other tests see.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
import schemathesis
from mlflow import MlflowClient
from redis.asyncio import Redis
from schemathesis.config import SchemathesisConfig

from api.app import create_app
from api.db.users import UserRepository
from api.security.crypto import Keyring
from api.services import similarity
from api.services.auth import AuthService, create_account
from api.settings import Settings
from pipelines.ingest import ingest_bundled
from serving.local import LocalPredictor
from tests.conftest import sign_up
from tests.live_server import serving_in_thread

FUZZ_DATABASE = "stockcopilot_fuzz"
FUZZ_REDIS_DB = 7
# Operations that would sign the shared fuzzing user out (or erase it) and turn every later case
# into a 401: each of their cases runs as a throwaway user of its own instead.
THROWAWAY_CALLER = {
    "POST /api/v1/auth/logout": "ends the caller's session",
    "DELETE /api/v1/users/me": "erases the caller's account",
    "DELETE /api/v1/users/me/sessions": "ends every session of the caller",
    "DELETE /api/v1/users/me/sessions/{session_id}": "may end the caller's own session",
}
THROWAWAYS = 200  # enough for every case of those operations at this seed
# Operations only an administrator may call: sent with an administrator's session.
ADMIN_ONLY = {"POST /api/v1/admin/bars/import", "GET /api/v1/users"}

CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": 20260101,
        # random examples per operation, on top of the schema's examples and boundary values
        "generation": {"max-examples": 5, "deterministic": True},
        "phases": {"stateful": {"enabled": False}},
        "checks": {
            # Both expect the schema to encode every rule. Here the rules past the schema — a
            # made-up reset token, an unknown indicator name, a CSV's rows, a time zone — are
            # refused with a documented 4xx problem (status conformance checks that), and
            # lenient parsing (`false` given as `0`) is accepted.
            "positive_data_acceptance": {"enabled": False},
            "negative_data_rejection": {"enabled": False},
        },
        "operations": [
            {
                # a concrete path beside a templated sibling: other methods reach the sibling
                # (`PATCH /portfolio/watchlists` is `PATCH /portfolio/{portfolio_id}` with an
                # invalid id, a 422) rather than a 405 — FastAPI has no typed path converters
                "include-path-regex": "^/api/v1/(portfolio/watchlists|users/me/notifications"
                "/read|predictions/batch)$",
                "checks": {"unsupported_method": {"enabled": False}},
            }
        ],
    }
)

# The schema the served app publishes (building the app touches no service); requests go to the
# live server at call time.
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi(), config=CONFIG)


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=path))


@pytest.fixture(scope="module")
async def fuzz_settings(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[Settings]:
    """The session's servers, with a database and a Redis keyspace for the fuzzer alone: the
    bundled data, and similarity windows of every size (a few tickers), so no route answers 503
    for want of set-up."""
    await pool.execute(f"DROP DATABASE IF EXISTS {FUZZ_DATABASE} WITH (FORCE)")
    await pool.execute(f"CREATE DATABASE {FUZZ_DATABASE}")
    database_url = _with_path(settings.database_url or "", f"/{FUZZ_DATABASE}")
    await ingest_bundled(database_url, show_progress=False)
    conn = await asyncpg.connect(database_url)
    try:
        for window in similarity.WINDOWS:
            await similarity.build(conn, window, ["KO", "AAPL"])
    finally:
        await conn.close()
    redis_url = f"{settings.redis_url}?db={FUZZ_REDIS_DB}"
    yield settings.model_copy(update={"database_url": database_url, "redis_url": redis_url})
    await pool.execute(f"DROP DATABASE IF EXISTS {FUZZ_DATABASE} WITH (FORCE)")


@pytest.fixture(scope="module")
def fuzz_server(fuzz_settings: Settings, serving_registry: MlflowClient) -> Iterator[str]:
    app = create_app(fuzz_settings, LocalPredictor(serving_registry))
    with serving_in_thread(app) as address:
        yield f"http://{address}"


@dataclass(frozen=True)
class Callers:
    base_url: str
    user: dict[str, str]
    admin: dict[str, str]
    throwaway: list[dict[str, str]]  # sessions of accounts made for one case each

    def one_off(self) -> dict[str, str]:
        assert self.throwaway, "raise THROWAWAYS: the generator made more cases"
        return self.throwaway.pop()


async def _minted_sessions(settings: Settings, count: int) -> list[dict[str, str]]:
    """Signed-in accounts without a password, made through the repositories and AuthService:
    an argon2 hash per throwaway caller would cost more than the case it serves."""
    keyring = Keyring.from_settings(settings)
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    redis = Redis.from_url(settings.redis_url or "", decode_responses=True)
    auth = AuthService(pool, redis, settings, keyring)
    try:
        sessions = []
        for _ in range(count):
            email = f"fuzz-once-{uuid.uuid4().hex}@example.com"
            user = await create_account(UserRepository(pool), keyring, email, "Once", None)
            pair = await auth.start_session(user, "schemathesis", None)
            sessions.append({"Authorization": f"Bearer {pair.access_token}"})
        return sessions
    finally:
        await redis.aclose()
        await pool.close()


@pytest.fixture(scope="module")
async def callers(fuzz_server: str, fuzz_settings: Settings) -> Callers:
    """A fuzzing user, an administrator, and throwaway sessions."""
    async with httpx.AsyncClient(base_url=fuzz_server, timeout=30) as client:
        user = await sign_up(client, "fuzz@example.com")
        admin_email = "fuzz-admin@example.com"
        me = await client.get("/api/v1/users/me", headers=await sign_up(client, admin_email))
        conn = await asyncpg.connect(fuzz_settings.database_url)
        try:
            await conn.execute(
                "UPDATE users SET role = 'admin' WHERE id = $1", uuid.UUID(me.json()["id"])
            )
        finally:
            await conn.close()
        admin = await sign_up(client, admin_email)  # a token carrying the role
    return Callers(fuzz_server, user, admin, await _minted_sessions(fuzz_settings, THROWAWAYS))


@schema.parametrize()
def test_every_operation_answers_as_documented(case: schemathesis.Case, callers: Callers) -> None:
    label = f"{case.method.upper()} {case.path}"
    if label in THROWAWAY_CALLER:
        headers = callers.one_off()
    elif label in ADMIN_ONLY:
        headers = callers.admin
    else:
        headers = callers.user
    case.call_and_validate(base_url=callers.base_url, headers=headers, timeout=60)
