"""Social / OIDC sign-in end to end against a real OAuth 2.0 server on loopback (Authlib's server
side): PKCE, single-use state, account creation and linking by verified e-mail."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from api.app import create_app
from api.settings import OAuthProvider, Settings
from tests.conftest import PASSWORD, sign_up
from tests.oauth_server import CLIENT_ID, CLIENT_SECRET, LocalAuthorizationServer, ProviderUser

PUBLIC = "http://test"
CALLBACK = f"{PUBLIC}/api/v1/auth/oauth/local/callback"


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalAuthorizationServer]:
    # Authlib's server refuses plain HTTP unless told this is a development setup
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")
    with LocalAuthorizationServer(CALLBACK) as server:
        yield server


@pytest.fixture
async def app_client(
    settings: Settings, provider: LocalAuthorizationServer
) -> AsyncIterator[httpx.AsyncClient]:
    configured = settings.model_copy(
        update={
            "public_url": PUBLIC,
            "oauth_providers": {
                "local": OAuthProvider(
                    client_id=CLIENT_ID,
                    client_secret=SecretStr(CLIENT_SECRET),
                    server_metadata_url=f"{provider.url}/.well-known/openid-configuration",
                )
            },
        }
    )
    app = create_app(configured)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=PUBLIC) as client:
            yield client


async def _browser_sign_in(
    client: httpx.AsyncClient, tamper: dict[str, str] | None = None
) -> tuple[httpx.Response, dict[str, list[str]]]:
    """Play the browser: our authorize redirect, the provider's approval, then our callback."""
    start = await client.get("/api/v1/auth/oauth/local/authorize")
    assert start.status_code == 307
    to_provider = start.headers["location"]
    query = parse_qs(urlsplit(to_provider).query)
    async with httpx.AsyncClient() as browser:
        approved = await browser.get(to_provider)
    assert approved.status_code == 302, approved.text
    back = urlsplit(approved.headers["location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == CALLBACK
    params = {k: v[0] for k, v in parse_qs(back.query).items()}
    params.update(tamper or {})
    return await client.get("/api/v1/auth/oauth/local/callback", params=params), query


async def test_first_sign_in_creates_a_verified_account_with_pkce_and_state(
    app_client: httpx.AsyncClient, provider: LocalAuthorizationServer, pool: asyncpg.Pool
) -> None:
    email = f"olivia-{uuid.uuid4().hex[:8]}@example.com"
    provider.approve_as = ProviderUser(f"sub-{uuid.uuid4().hex}", email)
    listed = await app_client.get("/api/v1/auth/oauth/providers")
    assert listed.json() == {"providers": ["local"]}

    response, query = await _browser_sign_in(app_client)
    assert query["code_challenge_method"] == ["S256"] and len(query["state"][0]) >= 32
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    me = await app_client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    assert me.json()["email"] == email and me.json()["email_verified"] is True
    assert me.json()["display_name"] == "Olivia OAuth"
    assert (
        await pool.fetchval(
            "SELECT password_hash FROM users WHERE id = $1", uuid.UUID(me.json()["id"])
        )
        is None
    )

    again, _ = await _browser_sign_in(app_client)  # the same provider account: the same user
    me_again = await app_client.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {again.json()['access_token']}"}
    )
    assert me_again.json()["id"] == me.json()["id"]


async def test_a_verified_email_links_the_existing_password_account(
    app_client: httpx.AsyncClient, provider: LocalAuthorizationServer
) -> None:
    email = f"linked-{uuid.uuid4().hex[:8]}@example.com"
    password_user = await sign_up(app_client, email)
    before = (await app_client.get("/api/v1/users/me", headers=password_user)).json()
    provider.approve_as = ProviderUser(f"sub-{uuid.uuid4().hex}", email)
    response, _ = await _browser_sign_in(app_client)
    assert response.status_code == 200
    token = response.json()["access_token"]
    after = await app_client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    assert after.json()["id"] == before["id"] and after.json()["email_verified"] is True
    login = await app_client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200  # the password still works too


async def test_unverified_email_replayed_or_forged_state_and_a_bad_code_are_refused(
    app_client: httpx.AsyncClient, provider: LocalAuthorizationServer
) -> None:
    provider.approve_as = ProviderUser(
        f"sub-{uuid.uuid4().hex}", "unverified@example.com", email_verified=False
    )
    unverified, _ = await _browser_sign_in(app_client)
    assert unverified.status_code == 403 and unverified.json()["code"] == "email_not_verified"

    provider.approve_as = ProviderUser(f"sub-{uuid.uuid4().hex}", "replay@example.com")
    forged, _ = await _browser_sign_in(app_client, tamper={"state": "x" * 43})
    assert forged.status_code == 400 and forged.json()["code"] == "invalid_state"

    response, _ = await _browser_sign_in(app_client)
    assert response.status_code == 200
    replay = await app_client.get(
        "/api/v1/auth/oauth/local/callback",
        params={"code": "whatever", "state": response.request.url.params["state"]},
    )
    assert replay.status_code == 400 and replay.json()["code"] == "invalid_state"  # single use

    bad_code, _ = await _browser_sign_in(app_client, tamper={"code": "not-the-code"})
    assert bad_code.status_code == 400 and bad_code.json()["code"] == "oauth_failed"
    unknown = await app_client.get("/api/v1/auth/oauth/nope/authorize")
    assert unknown.status_code == 404
