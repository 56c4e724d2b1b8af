"""Repositories for accounts: users, sessions and refresh tokens, API keys, one-time tokens,
consents and the security audit trail. All SQL is parametrised; e-mail never appears in clear."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

type Db = asyncpg.Connection | asyncpg.Pool


@dataclass(frozen=True)
class UserRow:
    id: uuid.UUID
    email_ct: str
    email_index: str
    password_hash: str | None
    display_name: str
    role: str
    timezone: str
    currency: str
    settings: dict[str, Any]
    email_verified_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: asyncpg.Record) -> UserRow:
        values = dict(row)
        values["settings"] = json.loads(values["settings"])
        return cls(**values)


_USER = """id, email_ct, email_index, password_hash, display_name, role, timezone, currency,
           settings, email_verified_at, created_at, updated_at"""


class UserRepository:
    def __init__(self, db: Db) -> None:
        self._db = db

    async def create(
        self,
        user_id: uuid.UUID,
        email_ct: str,
        email_index: str,
        password_hash: str | None,
        display_name: str,
        role: str = "user",
    ) -> UserRow | None:
        """The new user, or None when the e-mail is already registered."""
        row = await self._db.fetchrow(
            f"""INSERT INTO users (id, email_ct, email_index, password_hash, display_name, role)
                VALUES ($1, $2, $3, $4, $5, $6)
                ON CONFLICT (email_index) DO NOTHING RETURNING {_USER}""",
            user_id,
            email_ct,
            email_index,
            password_hash,
            display_name,
            role,
        )
        return UserRow.of(row) if row else None

    async def get(self, user_id: uuid.UUID) -> UserRow | None:
        row = await self._db.fetchrow(f"SELECT {_USER} FROM users WHERE id = $1", user_id)
        return UserRow.of(row) if row else None

    async def by_email_index(self, email_index: str) -> UserRow | None:
        row = await self._db.fetchrow(
            f"SELECT {_USER} FROM users WHERE email_index = $1", email_index
        )
        return UserRow.of(row) if row else None

    async def update_profile(self, user_id: uuid.UUID, changes: dict[str, Any]) -> UserRow:
        """Set any of display_name, timezone, currency (the keys are fixed here, not input)."""
        allowed = {"display_name", "timezone", "currency"}
        assert set(changes) <= allowed, set(changes) - allowed
        row = await self._db.fetchrow(
            f"""UPDATE users SET
                    display_name = coalesce($2, display_name),
                    timezone = coalesce($3, timezone),
                    currency = coalesce($4, currency),
                    updated_at = now()
                WHERE id = $1 RETURNING {_USER}""",
            user_id,
            changes.get("display_name"),
            changes.get("timezone"),
            changes.get("currency"),
        )
        assert row is not None
        return UserRow.of(row)

    async def put_settings(self, user_id: uuid.UUID, settings: dict[str, Any]) -> None:
        await self._db.execute(
            "UPDATE users SET settings = $2::jsonb, updated_at = now() WHERE id = $1",
            user_id,
            json.dumps(settings),
        )

    async def set_password(self, user_id: uuid.UUID, password_hash: str) -> None:
        await self._db.execute(
            "UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1",
            user_id,
            password_hash,
        )

    async def mark_email_verified(self, user_id: uuid.UUID, at: datetime | None = None) -> None:
        """Record that the user's address is verified (now, unless `at` is given)."""
        await self._db.execute(
            "UPDATE users SET email_verified_at = coalesce($2, now()) WHERE id = $1", user_id, at
        )

    async def delete(self, user_id: uuid.UUID) -> None:
        """Delete the account; every table that references `users(id)` cascades."""
        await self._db.execute("DELETE FROM users WHERE id = $1", user_id)

    async def set_role(self, user_id: uuid.UUID, role: str) -> None:
        await self._db.execute(
            "UPDATE users SET role = $2, updated_at = now() WHERE id = $1", user_id, role
        )

    async def list(self, limit: int, offset: int) -> list[UserRow]:
        rows = await self._db.fetch(
            f"SELECT {_USER} FROM users ORDER BY created_at, id LIMIT $1 OFFSET $2",
            limit,
            offset,
        )
        return [UserRow.of(r) for r in rows]

    async def email_ciphertexts(self) -> list[tuple[uuid.UUID, str]]:
        """Every user's e-mail ciphertext, rows locked (key rotation, inside a transaction)."""
        rows = await self._db.fetch("SELECT id, email_ct FROM users FOR UPDATE")
        return [(r["id"], r["email_ct"]) for r in rows]

    async def set_email_ciphertext(
        self, user_id: uuid.UUID, email_ct: str, email_index: str | None = None
    ) -> None:
        """Replace the ciphertext (and the blind index, when the index key changed too)."""
        await self._db.execute(
            "UPDATE users SET email_ct = $2, email_index = coalesce($3, email_index) WHERE id = $1",
            user_id,
            email_ct,
            email_index,
        )

    async def count_sealed_with(self, key_id: str) -> int:
        """E-mails sealed with key `key_id` (ciphertexts are `<key id>:...`)."""
        return int(
            await self._db.fetchval(
                "SELECT count(*) FROM users WHERE starts_with(email_ct, $1 || ':')", key_id
            )
        )


@dataclass(frozen=True)
class SessionRow:
    id: uuid.UUID
    user_id: uuid.UUID
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    revoked_reason: str | None
    user_agent: str


_SESSION = (
    "id, user_id, created_at, last_used_at, expires_at, revoked_at, revoked_reason, user_agent"
)


class SessionRepository:
    """Sessions (refresh-token families) and their rotating refresh tokens."""

    def __init__(self, db: Db) -> None:
        self._db = db

    async def create(
        self,
        session_id: uuid.UUID,
        user_id: uuid.UUID,
        token_hash: str,
        expires_at: datetime,
        user_agent: str,
    ) -> None:
        await self._db.execute(
            """WITH s AS (
                   INSERT INTO sessions (id, user_id, expires_at, user_agent)
                   VALUES ($1, $2, $4, $5)
               )
               INSERT INTO refresh_tokens (token_hash, session_id, expires_at)
               VALUES ($3, $1, $4)""",
            session_id,
            user_id,
            token_hash,
            expires_at,
            user_agent[:200],
        )

    async def token(self, token_hash: str) -> asyncpg.Record | None:
        """The refresh token with its session, locked for the rotation (use in a transaction)."""
        return await self._db.fetchrow(
            """SELECT t.token_hash, t.expires_at, t.used_at, s.id AS session_id, s.user_id,
                      s.revoked_at, s.expires_at AS session_expires_at
               FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id
               WHERE t.token_hash = $1 FOR UPDATE OF t, s""",
            token_hash,
        )

    async def rotate(self, old_hash: str, new_hash: str, session_id: uuid.UUID) -> None:
        await self._db.execute(
            """WITH used AS (UPDATE refresh_tokens SET used_at = now() WHERE token_hash = $1),
                    touched AS (UPDATE sessions SET last_used_at = now() WHERE id = $3)
               INSERT INTO refresh_tokens (token_hash, session_id, expires_at)
               SELECT $2, id, expires_at FROM sessions WHERE id = $3""",
            old_hash,
            new_hash,
            session_id,
        )

    async def revoke(self, session_id: uuid.UUID, reason: str) -> bool:
        status = await self._db.execute(
            """UPDATE sessions SET revoked_at = now(), revoked_reason = $2
               WHERE id = $1 AND revoked_at IS NULL""",
            session_id,
            reason,
        )
        return status.endswith(" 1")

    async def revoke_all(
        self, user_id: uuid.UUID, reason: str, keep: uuid.UUID | None = None
    ) -> list[uuid.UUID]:
        """Revoke every live session of the user (but `keep`); the ids revoked."""
        rows = await self._db.fetch(
            """UPDATE sessions SET revoked_at = now(), revoked_reason = $2
               WHERE user_id = $1 AND revoked_at IS NULL
                 AND ($3::uuid IS NULL OR id <> $3) RETURNING id""",
            user_id,
            reason,
            keep,
        )
        return [r["id"] for r in rows]

    async def get(self, session_id: uuid.UUID) -> SessionRow | None:
        row = await self._db.fetchrow(f"SELECT {_SESSION} FROM sessions WHERE id = $1", session_id)
        return SessionRow(**dict(row)) if row else None

    async def live_holder(self, session_id: uuid.UUID) -> tuple[uuid.UUID, str] | None:
        """(user id, role) of a live session (not revoked, not expired), or None."""
        row = await self._db.fetchrow(
            """SELECT s.user_id, u.role FROM sessions s JOIN users u ON u.id = s.user_id
               WHERE s.id = $1 AND s.revoked_at IS NULL AND s.expires_at > now()""",
            session_id,
        )
        return (row["user_id"], row["role"]) if row else None

    async def of_user(self, user_id: uuid.UUID) -> list[SessionRow]:
        """Every session of the user, ended ones too, oldest first."""
        rows = await self._db.fetch(
            f"SELECT {_SESSION} FROM sessions WHERE user_id = $1 ORDER BY created_at", user_id
        )
        return [SessionRow(**dict(r)) for r in rows]

    async def active(self, user_id: uuid.UUID) -> list[SessionRow]:
        rows = await self._db.fetch(
            f"""SELECT {_SESSION} FROM sessions
                WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now()
                ORDER BY created_at DESC""",
            user_id,
        )
        return [SessionRow(**dict(r)) for r in rows]


@dataclass(frozen=True)
class ApiKeyRow:
    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


_KEY = "id, user_id, name, prefix, scopes, created_at, expires_at, last_used_at, revoked_at"


class ApiKeyRepository:
    def __init__(self, db: Db) -> None:
        self._db = db

    async def create(
        self,
        key_id: uuid.UUID,
        user_id: uuid.UUID,
        name: str,
        prefix: str,
        key_hash: str,
        scopes: list[str],
        expires_at: datetime | None,
    ) -> ApiKeyRow:
        row = await self._db.fetchrow(
            f"""INSERT INTO api_keys (id, user_id, name, prefix, key_hash, scopes, expires_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {_KEY}""",
            key_id,
            user_id,
            name,
            prefix,
            key_hash,
            scopes,
            expires_at,
        )
        assert row is not None
        return ApiKeyRow(**dict(row))

    async def of_user(self, user_id: uuid.UUID) -> list[ApiKeyRow]:
        rows = await self._db.fetch(
            f"SELECT {_KEY} FROM api_keys WHERE user_id = $1 ORDER BY created_at DESC", user_id
        )
        return [ApiKeyRow(**dict(r)) for r in rows]

    async def authenticate(self, key_hash: str) -> ApiKeyRow | None:
        """The live key with this hash (not revoked, not expired), its last use recorded."""
        row = await self._db.fetchrow(
            f"""UPDATE api_keys SET last_used_at = now()
                WHERE key_hash = $1 AND revoked_at IS NULL
                  AND (expires_at IS NULL OR expires_at > now())
                RETURNING {_KEY}""",
            key_hash,
        )
        return ApiKeyRow(**dict(row)) if row else None

    async def revoke(self, user_id: uuid.UUID, key_id: uuid.UUID) -> bool:
        """Revoke one of this user's keys; False when it is not theirs (or already revoked)."""
        status = await self._db.execute(
            """UPDATE api_keys SET revoked_at = now()
               WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL""",
            key_id,
            user_id,
        )
        return status.endswith(" 1")


class SecurityEventRepository:
    def __init__(self, db: Db) -> None:
        self._db = db

    async def record(
        self,
        event: str,
        user_id: uuid.UUID | None,
        ip_hash: str | None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        await self._db.execute(
            """INSERT INTO security_events (event, user_id, ip_hash, detail)
               VALUES ($1, $2, $3, $4::jsonb)""",
            event,
            user_id,
            ip_hash,
            json.dumps(detail or {}),
        )

    async def of_user(self, user_id: uuid.UUID, limit: int = 200) -> list[asyncpg.Record]:
        return await self._db.fetch(
            """SELECT at, event, detail FROM security_events WHERE user_id = $1
               ORDER BY id DESC LIMIT $2""",
            user_id,
            limit,
        )

    async def anonymise(self, user_id: uuid.UUID) -> None:
        """Keep the user's entries, but no longer tied to them: no user, address or details."""
        await self._db.execute(
            "UPDATE security_events SET user_id = NULL, ip_hash = NULL, detail = '{}'::jsonb "
            "WHERE user_id = $1",
            user_id,
        )


class OneTimeTokenRepository:
    """Single-use, expiring tokens (e-mail verification, password reset), stored hashed."""

    def __init__(self, db: Db) -> None:
        self._db = db

    async def create(
        self, token_hash: str, user_id: uuid.UUID, purpose: str, expires_at: datetime
    ) -> None:
        await self._db.execute(
            """INSERT INTO one_time_tokens (token_hash, user_id, purpose, expires_at)
               VALUES ($1, $2, $3, $4)""",
            token_hash,
            user_id,
            purpose,
            expires_at,
        )

    async def consume(self, token_hash: str, purpose: str) -> uuid.UUID | None:
        """Spend a live token of this purpose; its user, or None if unknown, used or expired.
        One UPDATE, so two concurrent uses cannot both succeed."""
        return await self._db.fetchval(
            """UPDATE one_time_tokens SET used_at = now()
               WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL
                 AND expires_at > now()
               RETURNING user_id""",
            token_hash,
            purpose,
        )


class ConsentRepository:
    def __init__(self, db: Db) -> None:
        self._db = db

    async def record(self, user_id: uuid.UUID, kind: str, granted: bool) -> asyncpg.Record:
        row = await self._db.fetchrow(
            """INSERT INTO consents (user_id, kind, granted) VALUES ($1, $2, $3)
               RETURNING kind, granted, at""",
            user_id,
            kind,
            granted,
        )
        assert row is not None
        return row

    async def of_user(self, user_id: uuid.UUID) -> list[asyncpg.Record]:
        return await self._db.fetch(
            "SELECT kind, granted, at FROM consents WHERE user_id = $1 ORDER BY id", user_id
        )


class UserSecretRepository:
    """Secrets users keep with us (their own LLM provider keys), as ciphertext only."""

    def __init__(self, db: Db) -> None:
        self._db = db

    async def put(self, user_id: uuid.UUID, name: str, ciphertext: str) -> None:
        await self._db.execute(
            """INSERT INTO user_secrets (user_id, name, ciphertext) VALUES ($1, $2, $3)
               ON CONFLICT (user_id, name) DO UPDATE
               SET ciphertext = EXCLUDED.ciphertext, updated_at = now()""",
            user_id,
            name,
            ciphertext,
        )

    async def ciphertexts(self) -> list[tuple[uuid.UUID, str, str]]:
        """Every stored secret's ciphertext, rows locked (key rotation, inside a transaction)."""
        rows = await self._db.fetch("SELECT user_id, name, ciphertext FROM user_secrets FOR UPDATE")
        return [(r["user_id"], r["name"], r["ciphertext"]) for r in rows]

    async def count_sealed_with(self, key_id: str) -> int:
        return int(
            await self._db.fetchval(
                "SELECT count(*) FROM user_secrets WHERE starts_with(ciphertext, $1 || ':')",
                key_id,
            )
        )

    async def set_ciphertext(self, user_id: uuid.UUID, name: str, ciphertext: str) -> None:
        """Replace the ciphertext only (re-encryption; the secret itself did not change)."""
        await self._db.execute(
            "UPDATE user_secrets SET ciphertext = $3 WHERE user_id = $1 AND name = $2",
            user_id,
            name,
            ciphertext,
        )

    async def names(self, user_id: uuid.UUID) -> list[asyncpg.Record]:
        return await self._db.fetch(
            "SELECT name, updated_at FROM user_secrets WHERE user_id = $1 ORDER BY name", user_id
        )

    async def get(self, user_id: uuid.UUID, name: str) -> str | None:
        """The ciphertext of one of the user's secrets, or None when none is stored."""
        return await self._db.fetchval(
            "SELECT ciphertext FROM user_secrets WHERE user_id = $1 AND name = $2", user_id, name
        )

    async def delete(self, user_id: uuid.UUID, name: str) -> bool:
        status = await self._db.execute(
            "DELETE FROM user_secrets WHERE user_id = $1 AND name = $2", user_id, name
        )
        return status.endswith(" 1")
