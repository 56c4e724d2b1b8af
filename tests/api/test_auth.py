"""Accounts through the real app, Postgres and Redis: registration, login, token abuse, refresh
rotation and reuse, sessions, API keys and their scopes, ownership, lockout and rate limits."""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import jwt
import pytest

from api.app import create_app
from api.security.crypto import Keyring, email_context
from api.security.tokens import AUDIENCE, ISSUER
from api.settings import Settings
from contracts import DEFAULT_FAMILY
from tests.conftest import ANONYMOUS, PASSWORD, sign_up


def _email() -> str:
    return f"user-{uuid.uuid4().hex[:10]}@example.com"


async def _login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return await client.post("/api/v1/auth/login", json={"email": email, "password": password})


async def _register(
    client: httpx.AsyncClient, email: str, password: str = PASSWORD
) -> httpx.Response:
    return await client.post(
        "/api/v1/auth/register",
        json={"email": email, "password": password, "display_name": "Jane"},
    )


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ---------------------------------------------------------------- registration and storage


async def test_register_stores_the_email_encrypted_and_the_password_hashed(
    client: httpx.AsyncClient, pool: asyncpg.Pool, settings: Settings
) -> None:
    email = _email()
    response = await _register(client, email.upper())  # normalised to lower case
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["email"] == email and body["role"] == "user" and not body["email_verified"]
    row = await pool.fetchrow("SELECT * FROM users WHERE id = $1", uuid.UUID(body["id"]))
    stored = " ".join(str(v) for v in dict(row).values())
    assert email not in stored and email.split("@")[0] not in stored  # no plaintext anywhere
    assert PASSWORD not in stored and row["password_hash"].startswith("$argon2id$")
    keyring = Keyring.from_settings(settings)
    assert keyring.decrypt(row["email_ct"], email_context(row["id"])) == email

    again = await _register(client, email)
    assert again.status_code == 409 and again.json()["code"] == "email_taken"


@pytest.mark.parametrize(
    ("email", "password", "code"),
    [
        ("not-an-email", PASSWORD, "invalid_email"),
        ("someone@example.com", "short", "weak_password"),
        ("someone@example.com", "aaaaaaaaaaaaaaaa", "weak_password"),
        ("someone.long@example.com", "someone.long-2024!", "weak_password"),
    ],
)
async def test_bad_registrations_are_refused_with_a_reason(
    client: httpx.AsyncClient, email: str, password: str, code: str
) -> None:
    response = await _register(client, email, password)
    assert response.status_code == 422 and response.json()["code"] == code


async def test_login_and_me_and_a_failed_login_logs_neither_email_nor_password(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    email = _email()
    await _register(client, email)
    good = await _login(client, email)
    assert good.status_code == 200
    tokens = good.json()
    assert tokens["token_type"] == "bearer" and tokens["expires_in"] > 0
    me = await client.get("/api/v1/users/me", headers=_bearer(tokens["access_token"]))
    assert me.status_code == 200 and me.json()["email"] == email

    caplog.set_level(logging.DEBUG)
    secret = "Wrong-But-Secret-Passw0rd"
    bad = await _login(client, email, secret)
    assert bad.status_code == 401 and bad.headers["www-authenticate"] == "Bearer"
    unknown = await _login(client, _email(), secret)
    assert unknown.status_code == 401 and unknown.json()["detail"] == bad.json()["detail"]
    assert caplog.records  # the requests were logged...
    assert email not in caplog.text and secret not in caplog.text  # ...without what was typed


async def test_the_oauth2_password_form_gives_a_token_too(client: httpx.AsyncClient) -> None:
    email = _email()
    await _register(client, email)
    response = await client.post(
        "/api/v1/auth/token", data={"username": email, "password": PASSWORD}
    )
    assert response.status_code == 200 and response.json()["access_token"]


# ---------------------------------------------------------------- token abuse


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # the forged HS512
async def test_tampered_expired_wrong_algorithm_and_unsigned_tokens_are_refused(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    email = _email()
    await _register(client, email)
    token = (await _login(client, email)).json()["access_token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    key = settings.signing_key
    header, payload, signature = token.split(".")
    flipped = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
    now = int(time.time())
    forged = {
        "tampered": f"{header}.{flipped}.{signature}",
        "expired": jwt.encode({**claims, "iat": now - 7200, "exp": now - 3600}, key, "HS256"),
        "wrong algorithm": jwt.encode(claims, key, algorithm="HS512"),
        "alg none": jwt.encode(claims, None, algorithm="none"),
        "other key": jwt.encode(claims, "another-key-that-is-long-enough-32b", "HS256"),
        "other audience": jwt.encode({**claims, "aud": "someone-else"}, key, "HS256"),
        "no session": jwt.encode({k: v for k, v in claims.items() if k != "sid"}, key, "HS256"),
    }
    assert claims["iss"] == ISSUER and claims["aud"] == AUDIENCE
    assert (await client.get("/api/v1/users/me", headers=_bearer(token))).status_code == 200
    for name, bad in forged.items():
        response = await client.get("/api/v1/users/me", headers=_bearer(bad))
        assert response.status_code == 401, name
        assert response.json()["code"] == "unauthorized", name


# ---------------------------------------------------------------- refresh rotation and sessions


async def test_refresh_rotates_and_reusing_a_spent_token_revokes_the_whole_session(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    email = _email()
    await _register(client, email)
    first = (await _login(client, email)).json()
    second = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert second.status_code == 200
    fresh = second.json()
    assert fresh["refresh_token"] != first["refresh_token"]
    me = await client.get("/api/v1/users/me", headers=_bearer(fresh["access_token"]))
    assert me.status_code == 200
    user_id = uuid.UUID(me.json()["id"])

    # the spent token comes back (stolen): the session dies, the thief's and the owner's tokens
    reuse = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert reuse.status_code == 401 and "revoked" in reuse.json()["detail"]
    after = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": fresh["refresh_token"]}
    )
    assert after.status_code == 401
    me = await client.get("/api/v1/users/me", headers=_bearer(fresh["access_token"]))
    assert me.status_code == 401
    events = await pool.fetch(
        "SELECT event FROM security_events WHERE user_id = $1 ORDER BY id", user_id
    )
    assert [e["event"] for e in events] == ["register", "login", "refresh_token_reuse"]


async def test_logout_ends_the_session_and_sessions_can_be_listed_and_ended(
    client: httpx.AsyncClient,
) -> None:
    email = _email()
    await _register(client, email)
    laptop = (await _login(client, email)).json()
    phone = (await _login(client, email)).json()
    listed = await client.get("/api/v1/users/me/sessions", headers=_bearer(laptop["access_token"]))
    assert listed.status_code == 200
    sessions = listed.json()
    assert len(sessions) == 2 and sum(s["current"] for s in sessions) == 1
    phone_id = next(s["id"] for s in sessions if not s["current"])

    ended = await client.delete(
        f"/api/v1/users/me/sessions/{phone_id}", headers=_bearer(laptop["access_token"])
    )
    assert ended.status_code == 204
    assert (
        await client.get("/api/v1/users/me", headers=_bearer(phone["access_token"]))
    ).status_code == 401

    out = await client.post("/api/v1/auth/logout", headers=_bearer(laptop["access_token"]))
    assert out.status_code == 204
    assert (
        await client.get("/api/v1/users/me", headers=_bearer(laptop["access_token"]))
    ).status_code == 401
    refresh = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": laptop["refresh_token"]}
    )
    assert refresh.status_code == 401


# ---------------------------------------------------------------- API keys, scopes, ownership


async def test_api_keys_are_shown_once_scoped_revocable_and_expire(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    owner = await sign_up(client, _email())
    created = await client.post(
        "/api/v1/users/me/api-keys",
        json={"name": "notebook", "scopes": ["read:market"]},
        headers=owner,
    )
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    assert key.startswith(created.json()["prefix"] + "_")
    listed = (await client.get("/api/v1/users/me/api-keys", headers=owner)).json()
    assert [k["name"] for k in listed] == ["notebook"] and "key" not in listed[0]
    stored = await pool.fetchrow("SELECT * FROM api_keys WHERE prefix = $1", listed[0]["prefix"])
    assert key not in " ".join(str(v) for v in dict(stored).values())  # only its hash is kept

    with_key = {**ANONYMOUS, "X-API-Key": key}
    assert (await client.get("/api/v1/stocks?q=AAPL", headers=with_key)).status_code == 200
    denied = await client.get("/api/v1/predictions/AAPL", headers=with_key)
    assert denied.status_code == 403 and denied.json()["code"] == "insufficient_scope"
    me = await client.get("/api/v1/users/me", headers=with_key)
    assert me.status_code == 403 and me.json()["code"] == "insufficient_scope"
    nested = await client.post(
        "/api/v1/users/me/api-keys", json={"name": "x", "scopes": ["chat"]}, headers=with_key
    )
    assert nested.status_code == 401 and nested.json()["code"] == "session_required"
    used = await client.get("/api/v1/users/me/api-keys", headers=owner)
    assert used.json()[0]["last_used_at"] is not None

    bad_scope = await client.post(
        "/api/v1/users/me/api-keys", json={"name": "x", "scopes": ["admin"]}, headers=owner
    )
    assert bad_scope.status_code == 422 and bad_scope.json()["code"] == "invalid_scopes"

    await pool.execute(
        "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE prefix = $1",
        listed[0]["prefix"],
    )
    assert (await client.get("/api/v1/stocks?q=AAPL", headers=with_key)).status_code == 401
    await pool.execute(
        "UPDATE api_keys SET expires_at = NULL WHERE prefix = $1", listed[0]["prefix"]
    )
    revoked = await client.delete(f"/api/v1/users/me/api-keys/{listed[0]['id']}", headers=owner)
    assert revoked.status_code == 204
    assert (await client.get("/api/v1/stocks?q=AAPL", headers=with_key)).status_code == 401


async def test_one_user_cannot_see_or_end_anything_of_another(client: httpx.AsyncClient) -> None:
    alice = await sign_up(client, _email())
    bob = await sign_up(client, _email())
    key = await client.post(
        "/api/v1/users/me/api-keys", json={"name": "a", "scopes": ["chat"]}, headers=alice
    )
    alice_key = key.json()["id"]
    alice_session = (await client.get("/api/v1/users/me/sessions", headers=alice)).json()[0]["id"]

    for response in (
        await client.delete(f"/api/v1/users/me/api-keys/{alice_key}", headers=bob),
        await client.delete(f"/api/v1/users/me/sessions/{alice_session}", headers=bob),
        await client.delete(f"/api/v1/users/me/sessions/{uuid.uuid4()}", headers=bob),
    ):
        assert response.status_code == 404  # someone else's looks exactly like nothing
    assert (await client.get("/api/v1/users/me/api-keys", headers=bob)).json() == []
    assert (await client.get("/api/v1/users/me", headers=alice)).status_code == 200  # intact
    assert len((await client.get("/api/v1/users/me/api-keys", headers=alice)).json()) == 1
    assert (await client.get("/api/v1/users", headers=bob)).status_code == 403  # admin only


async def test_admin_lists_users_and_profile_and_settings_round_trip(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    user = await sign_up(client, _email())
    patched = await client.patch(
        "/api/v1/users/me",
        json={"display_name": "Jane D.", "timezone": "Europe/Paris", "currency": "EUR"},
        headers=user,
    )
    assert patched.status_code == 200
    assert (patched.json()["timezone"], patched.json()["currency"]) == ("Europe/Paris", "EUR")
    bad_zone = await client.patch("/api/v1/users/me", json={"timezone": "Mars/Base"}, headers=user)
    assert bad_zone.status_code == 422
    defaults = (await client.get("/api/v1/users/me/settings", headers=user)).json()
    assert defaults["default_model"] == DEFAULT_FAMILY
    wanted = {**defaults, "default_model": "lstm", "risk_tolerance": "high"}
    assert (
        await client.put("/api/v1/users/me/settings", json=wanted, headers=user)
    ).json() == wanted
    assert (await client.get("/api/v1/users/me/settings", headers=user)).json() == wanted
    bad = await client.put(
        "/api/v1/users/me/settings", json={**wanted, "default_model": "gpt"}, headers=user
    )
    assert bad.status_code == 422
    listing = await client.get("/api/v1/users", headers=admin_headers)
    assert listing.status_code == 200
    assert "Jane D." in {u["display_name"] for u in listing.json()}


# ---------------------------------------------------------------- brute force and rate limits


@pytest.fixture
async def strict_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app with production-like limits: 5 auth requests a minute, lockout after 3 misses."""
    strict = settings.model_copy(
        update={"rate_limit_auth_per_min": 5, "login_lockout_after": 3, "login_lockout_base_s": 30}
    )
    app = create_app(strict)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(f"10.9.{uuid.uuid4().int % 250}.1", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def test_repeated_failed_logins_lock_the_account_even_for_the_right_password(
    client: httpx.AsyncClient, strict_client: httpx.AsyncClient
) -> None:
    email = _email()
    await _register(client, email)
    for _ in range(3):
        assert (await _login(strict_client, email, "Wrong-password-123")).status_code == 401
    locked = await _login(strict_client, email)  # the right password, but locked
    assert locked.status_code == 429 and locked.json()["code"] == "account_locked"
    assert 0 < int(locked.headers["retry-after"]) <= 30


async def test_auth_routes_are_rate_limited_per_address_with_headers(
    strict_client: httpx.AsyncClient,
) -> None:
    responses = [await _login(strict_client, _email(), "whatever-password") for _ in range(6)]
    assert [r.status_code for r in responses] == [401] * 5 + [429]
    limited = responses[-1]
    assert limited.json()["code"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.headers["ratelimit-limit"] == "5"
    assert limited.headers["ratelimit-remaining"] == "0"
    assert responses[0].headers["ratelimit-remaining"] == "4"


async def test_security_headers_are_on_every_response(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert "default-src 'none'" in response.headers["content-security-policy"]
    docs = await client.get("/docs")
    assert docs.status_code == 200 and "content-security-policy" not in docs.headers


async def test_production_refuses_missing_and_weak_secrets_and_generates_none(
    settings: Settings, tmp_path: Path
) -> None:
    services = {"database_url": "postgresql://x", "redis_url": "redis://x"}
    with pytest.raises(ValueError, match="JWT_SECRET must be set"):
        Settings(environment="production", **services)
    for weak in ("x" * 40, "short-but-random-Qx7", "abcabcabcabcabcabcabcabcabcabcabcabc"):
        with pytest.raises(ValueError, match="JWT_SECRET must be at least"):
            Settings(environment="production", jwt_secret=weak, **services)
    production = Settings(
        environment="production",
        jwt_secret=secrets.token_urlsafe(48),
        data_dir=tmp_path,
        **services,
    )
    with pytest.raises(ValueError, match="ENCRYPTION_KEYS"):
        create_app(production)
    assert not (tmp_path / "secrets.json").exists()  # production never generates keys


async def test_an_api_key_cannot_be_created_already_expired(client: httpx.AsyncClient) -> None:
    user = await sign_up(client, _email())
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    response = await client.post(
        "/api/v1/users/me/api-keys",
        json={"name": "old", "scopes": ["chat"], "expires_at": past},
        headers=user,
    )
    assert response.status_code == 422 and response.json()["code"] == "invalid_expiry"


async def test_signed_in_callers_have_their_own_budget_within_a_larger_address_budget(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    limited = settings.model_copy(update={"rate_limit_default_per_min": 2})
    app = create_app(limited)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(f"10.8.{uuid.uuid4().int % 250}.1", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as shared_ip:
            alice = await sign_up(client, _email())
            bob = await sign_up(client, _email())
            statuses = [
                (await shared_ip.get("/api/v1/users/me", headers=who)).status_code
                for who in (alice, alice, alice, bob, bob)
            ]
            assert statuses == [200, 200, 429, 200, 200]  # Alice's budget is hers alone
            spent = [(await shared_ip.get("/api/v1/users/me", headers=bob)).status_code]
            assert spent == [429]
            anonymous = await shared_ip.get("/api/v1/stocks?q=A")
            # refused for lack of credentials, not for rate: the address budget (5 × 2) has room
            assert anonymous.status_code == 401
