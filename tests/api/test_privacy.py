"""E-mail verification, password reset, consents, stored secrets, GDPR export and erasure."""

from __future__ import annotations

import uuid

import asyncpg
import httpx

from api.security.mail import OutboxEmailSender
from api.settings import Settings
from tests.conftest import ANONYMOUS, PASSWORD, sign_up


def _email() -> str:
    return f"gdpr-{uuid.uuid4().hex[:10]}@example.com"


async def test_email_verification_link_is_single_use(
    client: httpx.AsyncClient, outbox: OutboxEmailSender
) -> None:
    email = _email()
    user = await sign_up(client, email)
    assert (await client.post("/api/v1/auth/verify-email/request", headers=user)).status_code == 202
    token = outbox.last(email, "verify_email").token
    assert (
        await client.post("/api/v1/auth/verify-email", json={"token": token})
    ).status_code == 204
    assert (await client.get("/api/v1/users/me", headers=user)).json()["email_verified"] is True
    again = await client.post("/api/v1/auth/verify-email", json={"token": token})
    assert again.status_code == 400 and again.json()["code"] == "invalid_token"
    done = await client.post("/api/v1/auth/verify-email/request", headers=user)
    assert done.status_code == 409


async def test_password_reset_sets_the_password_ends_sessions_and_reveals_nothing(
    client: httpx.AsyncClient, outbox: OutboxEmailSender
) -> None:
    email = _email()
    old_session = await sign_up(client, email)
    unknown = await client.post("/api/v1/auth/password-reset/request", json={"email": _email()})
    known = await client.post("/api/v1/auth/password-reset/request", json={"email": email})
    assert unknown.status_code == known.status_code == 202  # the same answer either way
    token = outbox.last(email, "reset_password").token

    weak = await client.post(
        "/api/v1/auth/password-reset", json={"token": token, "password": "short"}
    )
    assert weak.status_code == 422  # and the token is still good
    new_password = "a brand new long passphrase"
    reset = await client.post(
        "/api/v1/auth/password-reset", json={"token": token, "password": new_password}
    )
    assert reset.status_code == 204
    assert (await client.get("/api/v1/users/me", headers=old_session)).status_code == 401
    old = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert old.status_code == 401
    new = await client.post("/api/v1/auth/login", json={"email": email, "password": new_password})
    assert new.status_code == 200
    reused = await client.post(
        "/api/v1/auth/password-reset", json={"token": token, "password": "yet another passphrase"}
    )
    assert reused.status_code == 400


async def test_secrets_are_stored_encrypted_and_never_shown(
    client: httpx.AsyncClient, pool: asyncpg.Pool, settings: Settings
) -> None:
    user = await sign_up(client, _email())
    value = "tg-" + uuid.uuid4().hex
    stored = await client.put(
        "/api/v1/users/me/secrets/togetherai_api_key", json={"value": value}, headers=user
    )
    assert stored.status_code == 200 and "value" not in stored.json()
    listed = (await client.get("/api/v1/users/me/secrets", headers=user)).json()
    assert [s["name"] for s in listed] == ["togetherai_api_key"]
    row = await pool.fetchval(
        """SELECT s.ciphertext FROM user_secrets s JOIN users u ON u.id = s.user_id
           WHERE u.display_name = 'Test User' ORDER BY s.updated_at DESC LIMIT 1"""
    )
    assert row is not None and row.startswith(settings.encryption_active_key + ":")
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM user_secrets WHERE ciphertext LIKE $1", f"%{value}%"
        )
        == 0
    )
    bad = await client.put(
        "/api/v1/users/me/secrets/github_token", json={"value": value}, headers=user
    )
    assert bad.status_code == 422
    gone = await client.delete("/api/v1/users/me/secrets/togetherai_api_key", headers=user)
    assert gone.status_code == 204
    assert (
        await client.delete("/api/v1/users/me/secrets/togetherai_api_key", headers=user)
    ).status_code == 404


async def test_export_holds_every_seeded_item_and_erasure_leaves_no_pii(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    email = _email()
    user = await sign_up(client, email, "Erin Erasable")
    me = (await client.get("/api/v1/users/me", headers=user)).json()
    user_id = uuid.UUID(me["id"])
    await client.put(
        "/api/v1/users/me/settings",
        json={"default_model": "hybrid", "risk_tolerance": "low"},
        headers=user,
    )
    await client.post(
        "/api/v1/users/me/consents", json={"kind": "marketing_email", "granted": True}, headers=user
    )
    await client.post(
        "/api/v1/users/me/consents",
        json={"kind": "marketing_email", "granted": False},
        headers=user,
    )
    key = await client.post(
        "/api/v1/users/me/api-keys", json={"name": "bot", "scopes": ["chat"]}, headers=user
    )
    await client.put(
        "/api/v1/users/me/secrets/openai_api_key", json={"value": "sk-test-123456"}, headers=user
    )
    portfolio = await client.post("/api/v1/portfolio", json={"name": "Erin's"}, headers=user)
    await client.post(
        f"/api/v1/portfolio/{portfolio.json()['id']}/transactions",
        json={"type": "deposit", "amount": "250", "date": "2022-01-03"},
        headers=user,
    )

    export = await client.get("/api/v1/users/me/export", headers=user)
    assert export.status_code == 200
    data = export.json()
    assert data["profile"]["email"] == email and data["profile"]["display_name"] == "Erin Erasable"
    assert data["settings"]["default_model"] == "hybrid"
    assert [(c["kind"], c["granted"]) for c in data["consents"]] == [
        ("marketing_email", True),
        ("marketing_email", False),
    ]
    assert [k["prefix"] for k in data["api_keys"]] == [key.json()["prefix"]]
    assert "key" not in data["api_keys"][0]
    assert [s["name"] for s in data["stored_secrets"]] == ["openai_api_key"]
    assert "sk-test-123456" not in export.text
    assert len(data["sessions"]) == 1
    (exported_portfolio,) = data["portfolios"]
    assert exported_portfolio["name"] == "Erin's"
    assert [(t["type"], t["amount"]) for t in exported_portfolio["transactions"]] == [
        ("deposit", "250")
    ]
    assert {"register", "login", "api_key_created"} <= {e["event"] for e in data["security_events"]}

    refused = await client.request(
        "DELETE",
        "/api/v1/users/me",
        json={"confirm": "yes please", "password": PASSWORD},
        headers=user,
    )
    assert refused.status_code == 422
    wrong = await client.request(
        "DELETE",
        "/api/v1/users/me",
        json={"confirm": "DELETE MY ACCOUNT", "password": "not my password"},
        headers=user,
    )
    assert wrong.status_code == 403
    erased = await client.request(
        "DELETE",
        "/api/v1/users/me",
        json={"confirm": "DELETE MY ACCOUNT", "password": PASSWORD},
        headers=user,
    )
    assert erased.status_code == 204

    assert (await client.get("/api/v1/users/me", headers=user)).status_code == 401
    assert (
        await client.get("/api/v1/users/me", headers={**ANONYMOUS, "X-API-Key": key.json()["key"]})
    ).status_code == 401
    login = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 401
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM portfolio_transactions WHERE portfolio_id = $1",
            uuid.UUID(portfolio.json()["id"]),
        )
        == 0
    )
    for table in (
        "users",
        "sessions",
        "api_keys",
        "consents",
        "user_secrets",
        "one_time_tokens",
        "portfolios",
        "watchlists",
    ):
        column = "id" if table == "users" else "user_id"
        count = await pool.fetchval(f"SELECT count(*) FROM {table} WHERE {column} = $1", user_id)
        assert count == 0, table
    assert (
        await pool.fetchval("SELECT count(*) FROM security_events WHERE user_id = $1", user_id) == 0
    )
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM security_events "
            "WHERE event = 'account_erased' AND user_id IS NULL"
        )
        >= 1
    )


async def test_an_expired_reset_link_is_refused(
    client: httpx.AsyncClient, outbox: OutboxEmailSender, pool: asyncpg.Pool
) -> None:
    email = _email()
    await sign_up(client, email)
    await client.post("/api/v1/auth/password-reset/request", json={"email": email})
    token = outbox.last(email, "reset_password").token
    await pool.execute(
        "UPDATE one_time_tokens SET expires_at = now() - interval '1 minute' "
        "WHERE purpose = 'reset_password' AND used_at IS NULL"
    )
    response = await client.post(
        "/api/v1/auth/password-reset", json={"token": token, "password": "a long new passphrase"}
    )
    assert response.status_code == 400 and response.json()["code"] == "invalid_token"
