"""Who is asking, and how often: X-Forwarded-For believed only from trusted proxies, login
attempts counted per address and per account whatever credentials come along, and failures
throttled per (account, address) so a stranger cannot lock a user out."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from redis.asyncio import Redis

from api.app import create_app
from api.settings import Settings
from tests.conftest import PASSWORD, sign_up
from tests.live_server import serving

WRONG = "definitely not the password"
THROTTLE_REDIS_DB = 6


def _email() -> str:
    return f"throttle-{uuid.uuid4().hex[:10]}@example.com"


@asynccontextmanager
async def _app(settings: Settings, **changes: Any) -> AsyncIterator[Callable[[str], Any]]:
    """The app with `changes`; yields a factory of clients that connect from a given address."""
    app = create_app(settings.model_copy(update=changes))
    async with app.router.lifespan_context(app):
        clients: list[httpx.AsyncClient] = []

        def from_address(address: str) -> httpx.AsyncClient:
            transport = httpx.ASGITransport(app=app, client=(address, 40000))
            client = httpx.AsyncClient(transport=transport, base_url="http://test")
            clients.append(client)
            return client

        try:
            yield from_address
        finally:
            for client in clients:
                await client.aclose()


def _net() -> str:
    return f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"


async def _login(client: httpx.AsyncClient, email: str, password: str, **headers: str) -> int:
    response = await client.post(
        "/api/v1/auth/login", json={"email": email, "password": password}, headers=headers
    )
    return response.status_code


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(
    settings: Settings, first_ingest: object
) -> None:
    async with _app(settings, rate_limit_auth_per_min=2) as from_address:
        local = from_address(f"{_net()}.1")
        email = _email()
        statuses = [
            await _login(local, email, WRONG, **{"X-Forwarded-For": f"203.0.113.{i}"})
            for i in range(3)
        ]
        assert statuses == [401, 401, 429]  # one address, whatever the header claims


async def test_forwarded_for_from_a_trusted_proxy_names_the_client(
    settings: Settings, first_ingest: object
) -> None:
    net = _net()
    proxy = f"{net}.1"
    async with _app(settings, rate_limit_auth_per_min=2, trusted_proxies=[f"{net}.0/24"]) as at:
        via_proxy = at(proxy)
        email = _email()
        statuses = [
            await _login(via_proxy, email, WRONG, **{"X-Forwarded-For": f"198.51.100.{i % 3}"})
            for i in range(6)
        ]
        assert statuses == [401, 401, 401, 401, 401, 401]  # three clients, two tries each
        assert await _login(via_proxy, email, WRONG, **{"X-Forwarded-For": "198.51.100.0"}) == 429
        # a spoofed hop in front of the proxy's own entry does not choose the address
        spoof = {"X-Forwarded-For": "192.0.2.99, 198.51.100.0"}
        assert await _login(via_proxy, email, WRONG, **spoof) == 429


async def test_a_real_server_believes_no_forwarding_header_by_default(
    settings: Settings, first_ingest: object
) -> None:
    # every client of a loopback server is 127.0.0.1: a Redis database of this test's own keeps
    # its address budget apart from other tests'
    redis_url = f"{settings.redis_url}?db={THROTTLE_REDIS_DB}"
    scratch = Redis.from_url(redis_url)
    await scratch.flushdb()
    await scratch.aclose()
    app = create_app(
        settings.model_copy(update={"rate_limit_auth_per_min": 2, "redis_url": redis_url})
    )
    async with serving(app) as host, httpx.AsyncClient(base_url=f"http://{host}") as client:
        email = _email()
        statuses = [
            await _login(client, email, WRONG, **{"X-Forwarded-For": f"203.0.113.{i}"})
            for i in range(3)
        ]
        assert statuses == [401, 401, 429]


async def test_a_bearer_token_buys_no_looser_login_budget(
    settings: Settings, first_ingest: object
) -> None:
    async with _app(settings, rate_limit_auth_per_min=3) as from_address:
        client = from_address(f"{_net()}.7")
        token = await sign_up(client, _email())  # spends two requests of the address budget
        email = _email()
        assert await _login(client, email, WRONG, **token) == 401
        assert await _login(client, email, WRONG, **token) == 429


async def test_failures_lock_the_address_out_of_the_account_not_the_owner(
    settings: Settings, first_ingest: object
) -> None:
    async with _app(settings, login_lockout_after=3, login_lockout_base_s=60) as from_address:
        owner = from_address(f"{_net()}.2")
        stranger = from_address(f"{_net()}.3")
        email = _email()
        await sign_up(owner, email)
        assert [await _login(stranger, email, WRONG) for _ in range(4)] == [401, 401, 401, 429]
        locked = await stranger.post(
            "/api/v1/auth/login", json={"email": email, "password": PASSWORD}
        )
        assert locked.status_code == 429 and locked.json()["code"] == "account_locked"
        assert int(locked.headers["Retry-After"]) > 0
        assert await _login(owner, email, PASSWORD) == 200  # the owner, elsewhere, gets in


async def test_a_distributed_guess_meets_the_account_wide_ceiling(
    settings: Settings, first_ingest: object
) -> None:
    async with _app(settings, login_lockout_after=10, login_account_ceiling=4) as from_address:
        email = _email()
        await sign_up(from_address(f"{_net()}.9"), email)
        for _ in range(4):  # four addresses, one failure each: no pair is locked
            assert await _login(from_address(f"{_net()}.4"), email, WRONG) == 401
        elsewhere = from_address(f"{_net()}.5")
        assert await _login(elsewhere, email, PASSWORD) == 429  # the ceiling holds for an hour


async def test_attempts_on_one_account_are_limited_from_every_address(
    settings: Settings, first_ingest: object
) -> None:
    async with _app(settings, rate_limit_auth_per_min=1, login_lockout_after=100) as at:
        email = _email()
        statuses = [await _login(at(f"{_net()}.6"), email, WRONG) for _ in range(6)]
        assert statuses == [401] * 5 + [429]  # 5 × the auth tier per account and minute
