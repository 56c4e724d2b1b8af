"""Repository for the links between provider accounts and users (OAuth 2 / OIDC sign-in)."""

from __future__ import annotations

import uuid

import asyncpg

type Db = asyncpg.Connection | asyncpg.Pool


class OAuthIdentityRepository:
    """Which user a provider's account (provider, subject) signs in as."""

    def __init__(self, db: Db) -> None:
        self._db = db

    async def user_of(self, provider: str, subject: str) -> uuid.UUID | None:
        return await self._db.fetchval(
            "SELECT user_id FROM oauth_identities WHERE provider = $1 AND subject = $2",
            provider,
            subject,
        )

    async def link(self, provider: str, subject: str, user_id: uuid.UUID) -> None:
        await self._db.execute(
            "INSERT INTO oauth_identities (provider, subject, user_id) VALUES ($1, $2, $3)",
            provider,
            subject,
            user_id,
        )
