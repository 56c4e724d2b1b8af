"""An API serving the session's tiny registry (tests/model_registry.py), A/B callers, and the
Ray Serve stack the package's Serve tests share (one cluster: it takes a minute to start)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import asyncpg
import httpx
import pytest
import ray
from mlflow import MlflowClient
from pydantic import SecretStr
from ray import serve
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from sentry_sdk.envelope import Envelope

from api.app import create_app
from api.db.ab import AbWeightRepository
from api.db.users import UserRepository
from api.security.crypto import Keyring
from api.services.ab import bucket
from api.services.auth import AuthService, create_account
from api.settings import Settings
from serving.app import build_app, start_local_ray
from serving.config import Scaling, ServeAppConfig
from serving.local import LocalPredictor
from tests.live_server import free_port
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


class SentryInbox:
    """A loopback Sentry ingest endpoint for the SDKs in Ray's replicas: each envelope the real
    SDK posts is decoded with the SDK's own parser and kept."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._arrived = threading.Condition()
        inbox = self

        class Ingest(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                inbox.receive(body, self.headers.get("Content-Encoding", ""))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Ingest)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def dsn(self) -> str:
        return f"http://public@127.0.0.1:{self.server.server_address[1]}/1"

    def receive(self, body: bytes, encoding: str) -> None:
        if encoding == "gzip":
            import gzip

            body = gzip.decompress(body)
        elif encoding == "br":
            import brotli

            body = brotli.decompress(body)
        events = [i.payload.json for i in Envelope.deserialize(body).items if i.type == "event"]
        with self._arrived:
            self.events.extend(e for e in events if e is not None)
            self._arrived.notify_all()

    def wait_for(self, wanted: Callable[[dict[str, Any]], bool], timeout: float) -> dict | None:
        """The first event `wanted` accepts, waiting up to `timeout` seconds for it."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                found = next((e for e in self.events if wanted(e)), None)
                left = deadline - time.monotonic()
                if found is not None or left <= 0:
                    return found
                self._arrived.wait(left)


@dataclass(frozen=True)
class ServeCluster:
    url: str  # the Serve proxy
    session_dir: str  # Ray's session folder (its metrics discovery file is there)
    sentry: SentryInbox  # where every replica's Sentry SDK reports


@pytest.fixture(scope="package")
def serve_cluster(
    settings: Settings, first_ingest: object, serving_registry: MlflowClient, registry_uri: str
) -> Iterator[ServeCluster]:
    """The whole Serve application on a local Ray cluster, shared by the package's Serve tests:
    two ingress replicas (so metrics must add up across them), two LSTM replicas (one can be
    killed while the other answers), a quick-scaling hybrid, metrics exported every 2 s, and
    Sentry pointed at a loopback inbox."""
    inbox = SentryInbox()
    port = free_port()
    app_settings = settings.model_copy(
        update={
            "mlflow_tracking_uri": registry_uri,
            "alias_poll_s": 2.0,
            "sentry_dsn": SecretStr(inbox.dsn),
        }
    )
    context = start_local_ray(
        metrics_export_s=2.0,  # gauges live two export periods: 1 s is fragile under load
        num_cpus=2,
        include_dashboard=True,  # its head writes Prometheus' discovery file of metrics agents
        dashboard_host="127.0.0.1",
        dashboard_port=free_port(),
        log_to_driver=False,
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        config = ServeAppConfig(
            settings=app_settings,
            ingress=Scaling(
                min_replicas=2,
                max_replicas=2,
                num_cpus=0.1,
                max_ongoing_requests=64,
                target_ongoing_requests=16,
            ),
            overrides={
                "lstm": Scaling(min_replicas=2, max_replicas=3),
                # quick to react, so a short bounded load shows scaling out and back in
                "hybrid": Scaling(
                    min_replicas=1,
                    max_replicas=2,
                    target_ongoing_requests=1,
                    upscale_delay_s=1,
                    downscale_delay_s=8,
                ),
            },
        )
        serve.run(build_app(config), name="stockcopilot", route_prefix="/")
        yield ServeCluster(f"http://127.0.0.1:{port}", context.address_info["session_dir"], inbox)
    finally:
        serve.shutdown()
        ray.shutdown()
        inbox.server.shutdown()


@pytest.fixture(scope="package")
def serve_url(serve_cluster: ServeCluster) -> str:
    return serve_cluster.url
