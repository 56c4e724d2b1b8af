"""The keys no one else has and the tokens no one can bend: generated secrets per data folder,
tokens valid only for their own session, and roles read on the server side."""

from __future__ import annotations

import asyncio
import json
import stat
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import jwt
import pytest
from pydantic import SecretStr

from api.app import create_app
from api.security.keyfile import KeyFileError, key_file, load_or_create, with_secrets
from api.security.tokens import AUDIENCE, ISSUER
from api.settings import Settings
from tests.conftest import PASSWORD, sign_up

# What signed every token of a default start before keys were generated per data folder.
OLD_DEVELOPMENT_KEY = "stock-copilot-development-signing-key-not-secret"


def _unconfigured(settings: Settings, data_dir: Path) -> Settings:
    """The session's services, a fresh data folder, and no key configured."""
    return settings.model_copy(
        update={
            "data_dir": data_dir,
            "jwt_secret": None,
            "encryption_keys": None,
            "encryption_active_key": None,
            "blind_index_key": None,
            "metrics_token": None,
        }
    )


def _claims(token: str) -> dict[str, object]:
    return jwt.decode(token, options={"verify_signature": False})


def _forge(key: str, **claims: object) -> dict[str, str]:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 600, "jti": "x", **claims}
    return {"Authorization": f"Bearer {jwt.encode(body, key, algorithm='HS256')}"}


@pytest.fixture
async def two_apps(
    settings: Settings, tmp_path: Path, first_ingest: object
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient, Settings, Settings]]:
    """Two apps on the same database, each started on a data folder of its own."""
    first = _unconfigured(settings, tmp_path / "a")
    second = _unconfigured(settings, tmp_path / "b")
    apps = [create_app(first), create_app(second)]
    async with apps[0].router.lifespan_context(apps[0]), apps[1].router.lifespan_context(apps[1]):
        clients = [
            httpx.AsyncClient(transport=httpx.ASGITransport(app=a), base_url="http://test")
            for a in apps
        ]
        try:
            yield clients[0], clients[1], with_secrets(first), with_secrets(second)
        finally:
            for c in clients:
                await c.aclose()


async def test_each_data_folder_generates_its_own_keys_and_refuses_the_others_tokens(
    two_apps: tuple[httpx.AsyncClient, httpx.AsyncClient, Settings, Settings],
    pool: asyncpg.Pool,
) -> None:
    a, b, settings_a, settings_b = two_apps
    for folder_settings in (settings_a, settings_b):
        path = key_file(folder_settings)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        stored = json.loads(path.read_text())
        assert len(stored["jwt_secret"]) >= 43  # 256 bits and more, URL-safe
        assert {"encryption_keys", "blind_index_key", "metrics_token"} <= set(stored)
    assert settings_a.signing_key != settings_b.signing_key
    assert settings_a.blind_index_key != settings_b.blind_index_key

    headers = await sign_up(a, f"folder-{uuid.uuid4().hex[:8]}@example.com")
    me = await a.get("/api/v1/users/me", headers=headers)
    assert me.status_code == 200
    refused = await b.get("/api/v1/users/me", headers=headers)
    assert refused.status_code == 401
    # the account is sealed with folder A's keys: leave no row the session's keys cannot open
    await pool.execute("DELETE FROM users WHERE id = $1", uuid.UUID(me.json()["id"]))


async def test_a_later_start_reuses_the_keys_and_the_environment_overrides_them(
    settings: Settings, tmp_path: Path
) -> None:
    folder = _unconfigured(settings, tmp_path)
    first, again = with_secrets(folder), with_secrets(folder)
    assert first.signing_key == again.signing_key
    assert first.encryption_keys == again.encryption_keys
    chosen = "an-operator-chosen-key-0123456789-ABCDEFGHIJ"
    overridden = with_secrets(folder.model_copy(update={"jwt_secret": SecretStr(chosen)}))
    assert overridden.signing_key == chosen
    assert overridden.blind_index_key == first.blind_index_key  # the rest still from the file


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    load_or_create(path)
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_or_create(path)


async def test_tokens_signed_with_the_old_development_key_are_refused(
    client: httpx.AsyncClient,
) -> None:
    headers = await sign_up(client, f"old-key-{uuid.uuid4().hex[:8]}@example.com")
    claims = _claims(headers["Authorization"].removeprefix("Bearer "))
    forged = _forge(OLD_DEVELOPMENT_KEY, sub=claims["sub"], sid=claims["sid"])
    response = await client.get("/api/v1/users/me", headers=forged)
    assert response.status_code == 401 and response.json()["detail"] == "invalid access token"


async def test_a_token_naming_another_users_live_session_is_refused(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    alice = await sign_up(client, f"alice-{uuid.uuid4().hex[:8]}@example.com")
    bob = await sign_up(client, f"bob-{uuid.uuid4().hex[:8]}@example.com")
    alice_id = _claims(alice["Authorization"].removeprefix("Bearer "))["sub"]
    bob_sid = _claims(bob["Authorization"].removeprefix("Bearer "))["sid"]
    # even with the real key (a leaked one), Alice's id and Bob's live session do not combine
    forged = _forge(settings.signing_key, sub=alice_id, sid=bob_sid)
    for path in ("/api/v1/users/me", "/api/v1/portfolio"):
        assert (await client.get(path, headers=forged)).status_code == 401, path
    assert (await client.get("/api/v1/users/me", headers=bob)).status_code == 200


async def test_a_role_claim_in_a_token_makes_no_one_an_administrator(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    user = await sign_up(client, f"claims-{uuid.uuid4().hex[:8]}@example.com")
    claims = _claims(user["Authorization"].removeprefix("Bearer "))
    assert "role" not in claims  # tokens carry no authority of their own
    forged = _forge(settings.signing_key, sub=claims["sub"], sid=claims["sid"], role="admin")
    assert (await client.get("/api/v1/users/me", headers=forged)).status_code == 200
    listing = await client.get("/api/v1/users", headers=forged)
    assert listing.status_code == 403 and listing.json()["code"] == "forbidden"
    upload = await client.post(
        "/api/v1/admin/bars/import",
        params={"ticker": "EVIL"},
        files={"file": ("x.csv", b"date,close\n2020-01-02,1\n")},
        headers=forged,
    )
    assert upload.status_code == 403


async def test_a_demoted_administrator_loses_the_role_within_the_session_cache_period(
    settings: Settings, pool: asyncpg.Pool, first_ingest: object
) -> None:
    quick = settings.model_copy(update={"session_cache_s": 1})
    app = create_app(quick)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            email = f"demoted-{uuid.uuid4().hex[:8]}@example.com"
            headers = await sign_up(client, email)
            user_id = uuid.UUID(str(_claims(headers["Authorization"][7:])["sub"]))
            await pool.execute("UPDATE users SET role = 'admin' WHERE id = $1", user_id)
            deadline = time.monotonic() + 15
            while (await client.get("/api/v1/users", headers=headers)).status_code != 200:
                assert time.monotonic() < deadline, "the promotion was never seen"
                await asyncio.sleep(0.2)
            await pool.execute("UPDATE users SET role = 'user' WHERE id = $1", user_id)
            started = time.monotonic()
            while (await client.get("/api/v1/users", headers=headers)).status_code == 200:
                assert time.monotonic() - started < 15, "the demotion was never seen"
                await asyncio.sleep(0.2)
            assert (await client.get("/api/v1/users", headers=headers)).status_code == 403
            assert (await client.get("/api/v1/users/me", headers=headers)).status_code == 200


async def test_token_errors_do_not_echo_library_internals(client: httpx.AsyncClient) -> None:
    for bad in ("not-a-jwt", "a.b.c", "eyJhbGciOiJub25lIn0.e30."):
        response = await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {bad}"})
        assert response.status_code == 401
        assert response.json()["detail"] == "invalid access token", bad


async def test_changing_the_password_needs_the_current_one_and_ends_the_other_sessions(
    client: httpx.AsyncClient,
) -> None:
    email = f"changer-{uuid.uuid4().hex[:8]}@example.com"
    here = await sign_up(client, email)
    elsewhere = await sign_up(client, email)
    url = "/api/v1/users/me/password"
    wrong = await client.post(
        url,
        json={"current_password": "not it at all, sorry", "new_password": "x" * 20},
        headers=here,
    )
    assert wrong.status_code == 403 and wrong.json()["code"] == "wrong_password"
    new = "a completely new passphrase"
    changed = await client.post(
        url, json={"current_password": PASSWORD, "new_password": new}, headers=here
    )
    assert changed.status_code == 200 and changed.json() == {"sessions_ended": 1}
    assert (await client.get("/api/v1/users/me", headers=here)).status_code == 200
    assert (await client.get("/api/v1/users/me", headers=elsewhere)).status_code == 401
    login = await client.post("/api/v1/auth/login", json={"email": email, "password": new})
    assert login.status_code == 200
