"""A user's own records besides credentials: profile, preferences, consents and the provider
keys they keep with us (encrypted at rest). Credentials, sessions and API keys are
`api.services.auth`'s."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from api.db.users import ConsentRepository, UserRepository, UserRow, UserSecretRepository
from api.errors import ProblemError
from api.security.crypto import Keyring, secret_context
from api.services.preferences import UserSettings, preferences


class AccountService:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def me(self, user_id: uuid.UUID) -> UserRow:
        """The caller's account; 401 when it was erased while a token was still in flight."""
        user = await UserRepository(self._pool).get(user_id)
        if user is None:
            raise ProblemError(401, "unauthorized", "this account no longer exists")
        return user

    async def update_profile(self, user_id: uuid.UUID, changes: dict[str, Any]) -> UserRow:
        """Set any of display_name, timezone, currency."""
        await self.me(user_id)
        return await UserRepository(self._pool).update_profile(user_id, changes)

    async def preferences(self, user_id: uuid.UUID) -> UserSettings | None:
        """The user's preferences (None when the account is gone)."""
        user = await UserRepository(self._pool).get(user_id)
        return preferences(user.settings) if user else None

    async def put_preferences(self, user_id: uuid.UUID, settings: UserSettings) -> None:
        await UserRepository(self._pool).put_settings(user_id, settings.model_dump())

    async def all_users(self, limit: int, offset: int) -> list[UserRow]:
        """Every account, oldest first (for administrators)."""
        return await UserRepository(self._pool).list(limit, offset)

    async def record_consent(self, user_id: uuid.UUID, kind: str, granted: bool) -> dict[str, Any]:
        """(kind, granted, at) of the consent given or withdrawn."""
        return dict(await ConsentRepository(self._pool).record(user_id, kind, granted))

    async def consents(self, user_id: uuid.UUID) -> list[dict[str, Any]]:
        """Every consent given or withdrawn, oldest first."""
        return [dict(r) for r in await ConsentRepository(self._pool).of_user(user_id)]

    async def put_secret(
        self, user_id: uuid.UUID, name: str, value: str, keyring: Keyring
    ) -> datetime:
        """Keep a provider key, encrypted for this user and name; when it was stored."""
        repo = UserSecretRepository(self._pool)
        await repo.put(user_id, name, keyring.encrypt(value, secret_context(user_id, name)))
        return {r["name"]: r["updated_at"] for r in await repo.names(user_id)}[name]

    async def secrets(self, user_id: uuid.UUID) -> list[dict[str, Any]]:
        """(name, updated_at) of each stored secret, never its value."""
        return [dict(r) for r in await UserSecretRepository(self._pool).names(user_id)]

    async def delete_secret(self, user_id: uuid.UUID, name: str) -> None:
        if not await UserSecretRepository(self._pool).delete(user_id, name):
            raise ProblemError(404, "secret_not_found", f"no {name} stored")
