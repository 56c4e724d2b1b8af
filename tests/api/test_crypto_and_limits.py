"""Field encryption, log masking and the rate limiter's fallback, checked directly."""

from __future__ import annotations

import json
import os
import secrets

import asyncpg
import httpx
import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from api.logging import mask_text
from api.security.crypto import DecryptionError, Keyring, email_context, generate_key
from api.security.ratelimit import Limit, RateLimiter
from api.settings import Environment, Settings


def _settings(keys: dict[str, str], active: str, environment: str = "development") -> Settings:
    return Settings(
        environment=environment,
        jwt_secret=secrets.token_urlsafe(48),
        encryption_keys=SecretStr(json.dumps(keys)),
        encryption_active_key=active,
        blind_index_key=SecretStr(generate_key()),
    )


def test_ciphertext_is_bound_to_its_context_and_refuses_tampering() -> None:
    ring = Keyring.from_settings(_settings({"k1": generate_key()}, "k1"))
    sealed = ring.encrypt("jane@example.com", "users.email:1")
    assert "jane" not in sealed and sealed.startswith("k1:")
    assert ring.decrypt(sealed, "users.email:1") == "jane@example.com"
    assert ring.encrypt("jane@example.com", "users.email:1") != sealed  # fresh nonce each time
    with pytest.raises(DecryptionError):
        ring.decrypt(sealed, "users.email:2")  # copied into another row
    kid, body = sealed.split(":")
    tampered = f"{kid}:{body[:-3]}{'A' if body[-3] != 'A' else 'B'}{body[-2:]}"
    with pytest.raises(DecryptionError):
        ring.decrypt(tampered, "users.email:1")


def test_old_ciphertexts_stay_readable_after_a_new_key_becomes_active() -> None:
    old, new = generate_key(), generate_key()
    before = Keyring.from_settings(_settings({"2025": old}, "2025"))
    sealed = before.encrypt("secret", "ctx")
    after = Keyring.from_settings(_settings({"2025": old, "2026": new}, "2026"))
    assert after.decrypt(sealed, "ctx") == "secret"
    assert after.key_id(after.encrypt("secret", "ctx")) == "2026"
    retired = Keyring.from_settings(_settings({"2026": new}, "2026"))
    with pytest.raises(DecryptionError, match="no key"):
        retired.decrypt(sealed, "ctx")


def test_blind_index_is_deterministic_and_keyed() -> None:
    a = Keyring.from_settings(_settings({"k": generate_key()}, "k"))
    b = Keyring.from_settings(_settings({"k": generate_key()}, "k"))
    assert a.blind_index("jane@example.com") == a.blind_index("jane@example.com")
    assert a.blind_index("jane@example.com") != b.blind_index("jane@example.com")


def test_development_keys_are_refused_in_production() -> None:
    production = Settings(
        environment=Environment.PRODUCTION,
        jwt_secret=secrets.token_urlsafe(48),
        database_url="postgresql://x",
        redis_url="redis://x",
    )
    with pytest.raises(ValueError, match="must be set in production"):
        Keyring.from_settings(production)
    with pytest.raises(ValueError, match="32 bytes"):
        Keyring.from_settings(_settings({"k": "c2hvcnQ"}, "k"))


def test_log_masking_covers_emails_tokens_keys_and_bearer_credentials() -> None:
    line = (
        "user jane.doe@example.com sent Authorization: Bearer abc.def-123 with "
        "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig_nature and key "
        "sck_0123abcd_SECRETSECRETSECRET"
    )
    masked = mask_text(line)
    for secret in ("jane.doe", "abc.def-123", "eyJzdWIiOiIxIn0", "SECRETSECRETSECRET"):
        assert secret not in masked, secret
    assert "j***@example.com" in masked and "sck_0123abcd_***" in masked


async def test_gcra_allows_the_burst_then_limits_and_survives_redis_going_away(
    settings: Settings,
) -> None:
    limit = Limit("test", 3, 60.0)
    redis = Redis.from_url(settings.redis_url or "")
    shared = RateLimiter(redis, prefix="rl-test")
    decisions = [await shared.hit(limit, "ip:1") for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions[:3]] == [2, 1, 0]
    assert 19 <= decisions[3].retry_after_s <= 20.5  # one request frees up every 20 s
    assert (await RateLimiter(redis, prefix="rl-test").hit(limit, "ip:1")).allowed is False
    assert (await shared.hit(limit, "ip:2")).allowed  # budgets are per subject
    await redis.aclose()

    gone = RateLimiter(Redis.from_url("unix:///nonexistent/redis.sock"), prefix="rl-test")
    local = [await gone.hit(limit, "ip:1") for _ in range(4)]  # no exception: local fallback
    assert [d.allowed for d in local] == [True, True, True, False]


async def test_key_rotation_re_encrypts_every_email_and_they_stay_readable(
    client: httpx.AsyncClient, pool: asyncpg.Pool, settings: Settings
) -> None:
    from pipelines.security_cli import rotate_fields
    from tests.conftest import sign_up

    await sign_up(client, "rotation@example.com")
    dev = Keyring.from_settings(settings)
    ring = Keyring({**dev.keys, "2026": os.urandom(32)}, "2026", dev.index_key)
    async with pool.acquire() as conn:
        outer = conn.transaction()  # rolled back: the session's other tests keep the dev ring
        await outer.start()
        try:
            before = {
                r["id"]: dev.decrypt(r["email_ct"], email_context(r["id"]))
                for r in await conn.fetch("SELECT id, email_ct FROM users")
            }
            secrets = await conn.fetchval("SELECT count(*) FROM user_secrets")  # e.g. chat keys
            changed, total = await rotate_fields(conn, ring)
            assert changed == total == len(before) + secrets >= 1
            rows = await conn.fetch("SELECT id, email_ct FROM users")
            assert all(r["email_ct"].startswith("2026:") for r in rows)
            after = {r["id"]: ring.decrypt(r["email_ct"], email_context(r["id"])) for r in rows}
            assert after == before and "rotation@example.com" in after.values()
            assert await rotate_fields(conn, ring) == (0, total)  # nothing left on old keys
        finally:
            await outer.rollback()
