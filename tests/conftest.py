"""Session-wide real services: embedded Postgres (pgvector) and Redis; bundled data ingested."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pandas as pd
import pytest
from redis.asyncio import Redis

from api.app import create_app
from api.security.mail import OutboxEmailSender
from api.settings import Environment, Settings
from features.bars import ticker_frame
from features.datasets import load_bundled_bars
from pipelines.embedded import resolved_settings
from pipelines.ingest import IngestReport, ingest_bundled
from tests.model_registry import registry_root, registry_uri, serving_registry

__all__ = ["registry_root", "registry_uri", "serving_registry"]  # session fixtures, shared

PASSWORD = "correct horse battery staple"
DEFAULT_USER = "default-user@example.com"
ANONYMOUS = {"Authorization": ""}  # overrides a client's default credentials: no caller


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stockcopilot")


@pytest.fixture(scope="session")
def settings(data_dir: Path) -> Iterator[Settings]:
    base = Settings(
        environment=Environment.TEST,
        data_dir=data_dir,
        database_url=None,
        redis_url=None,
        # the suite makes thousands of requests from one address; tests of the limiter build
        # their own app with small limits
        rate_limit_default_per_min=1_000_000,
        rate_limit_auth_per_min=1_000_000,
        access_token_ttl_s=3_600,
        log_json=True,
        feed_mode="off",  # tests that need the feed run it themselves
    )
    with resolved_settings(base) as ready:
        yield ready


@pytest.fixture(scope="session")
def metrics_auth(settings: Settings) -> dict[str, str]:
    """What Prometheus sends to /metrics: the data folder's generated METRICS_TOKEN."""
    assert settings.metrics_token is not None
    return {"Authorization": f"Bearer {settings.metrics_token.get_secret_value()}"}


@pytest.fixture(scope="session")
def bundled_bars() -> pd.DataFrame:
    return load_bundled_bars()


@pytest.fixture(scope="session")
def goog(bundled_bars: pd.DataFrame) -> pd.DataFrame:
    """Real GOOG daily OHLCV 2004-2013 (backtesting.py's bundled copy)."""
    return ticker_frame(bundled_bars, "GOOG")


@pytest.fixture(scope="session")
async def first_ingest(settings: Settings) -> IngestReport:
    return await ingest_bundled(settings.database_url or "", show_progress=False)


@pytest.fixture(scope="session")
async def pool(settings: Settings, first_ingest: IngestReport) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    """A client of the session's Redis, on the test's event loop."""
    client = Redis.from_url(settings.redis_url or "", decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def outbox() -> OutboxEmailSender:
    """Account e-mails the session's app sends (verification and reset links)."""
    return OutboxEmailSender()


@pytest.fixture(scope="session")
async def client(
    settings: Settings, first_ingest: IngestReport, outbox: OutboxEmailSender
) -> AsyncIterator[httpx.AsyncClient]:
    """The API in-process, signed in as a default user (domain routes all need a caller);
    send `ANONYMOUS` as headers to call without credentials."""
    app = create_app(settings)
    app.state.email_sender = outbox
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            client.headers.update(await sign_up(client, DEFAULT_USER))
            yield client


@pytest.fixture(scope="session")
def user_headers(client: httpx.AsyncClient) -> dict[str, str]:
    """The default user's Authorization header, for other clients of the same services."""
    return {"Authorization": client.headers["Authorization"]}


async def sign_up(
    client: httpx.AsyncClient, email: str, display_name: str = "Test User"
) -> dict[str, str]:
    """Register (if new) and log in; the Authorization header of the session."""
    await client.post(
        "/api/v1/auth/register",
        json={"email": email, "password": PASSWORD, "display_name": display_name},
    )
    response = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.fixture(scope="session")
async def admin_headers(client: httpx.AsyncClient, pool: asyncpg.Pool) -> dict[str, str]:
    """An administrator's session (registered through the API, promoted in the database)."""
    me = await client.get("/api/v1/users/me", headers=await sign_up(client, "admin@example.com"))
    await pool.execute("UPDATE users SET role = 'admin' WHERE id = $1", uuid.UUID(me.json()["id"]))
    return await sign_up(client, "admin@example.com")  # a fresh token carrying the role


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point `stockcopilot` commands run by a test at the session's embedded services."""
    monkeypatch.setenv("DATABASE_URL", settings.database_url or "")
    monkeypatch.setenv("REDIS_URL", settings.redis_url or "")
    monkeypatch.setenv("STOCKCOPILOT_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("LOG_JSON", "true")


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave without the interpreter's final teardown once pytest has finished everything.

    By now every fixture has stopped what it started (Ray, Postgres, Redis) and the summary is
    printed. Ray's native threads can still crash CPython's own finalisation (exit 139 after a
    green run; see ray-project/ray#34508), which would turn a passing suite red at random.
    """
    status = getattr(config, "_stockcopilot_exitstatus", None)
    if status is None or "ray" not in sys.modules:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(status))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config._stockcopilot_exitstatus = exitstatus  # type: ignore[attr-defined]
