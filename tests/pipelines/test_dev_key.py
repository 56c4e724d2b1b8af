"""Data an older release sealed with its public development key is re-sealed with the data
folder's own keys, and its owner signs in as before."""

from __future__ import annotations

import uuid

import asyncpg
import httpx

from api.db.users import UserRepository, UserSecretRepository
from api.security.crypto import Keyring, email_context, secret_context
from api.security.tokens import hash_password
from api.settings import Settings
from pipelines.dev_key import retired_ring, sealed_with_retired_key
from tests.conftest import PASSWORD
from tests.utils import invoke


async def test_retire_dev_key_reseals_accounts_and_secrets_and_they_sign_in(
    cli_env: None, client: httpx.AsyncClient, pool: asyncpg.Pool, settings: Settings
) -> None:
    old = retired_ring()
    email = f"from-an-old-release-{uuid.uuid4().hex[:6]}@example.com"
    user_id = uuid.uuid4()
    await UserRepository(pool).create(
        user_id,
        old.encrypt(email, email_context(user_id)),
        old.blind_index(email),
        await hash_password(PASSWORD),
        "Old Timer",
    )
    await UserSecretRepository(pool).put(
        user_id, "openai_api_key", old.encrypt("sk-kept", secret_context(user_id, "openai_api_key"))
    )
    before = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert before.status_code == 401  # sealed with a key this folder does not use
    async with pool.acquire() as conn:
        assert await sealed_with_retired_key(conn) >= 2

    result = await invoke("keys", "retire-dev-key")
    assert result.exit_code == 0, result.output
    assert "re-sealed" in result.output

    async with pool.acquire() as conn:
        assert await sealed_with_retired_key(conn) == 0
    ring = Keyring.from_settings(settings)
    stored = await UserSecretRepository(pool).get(user_id, "openai_api_key")
    assert stored is not None
    assert ring.decrypt(stored, secret_context(user_id, "openai_api_key")) == "sk-kept"
    login = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200
    me = await client.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {login.json()['access_token']}"}
    )
    assert me.json()["email"] == email
