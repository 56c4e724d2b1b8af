"""GDPR: export everything we hold about a user, and erase it.

The export is assembled from `EXPORTERS`, one per kind of personal data; a feature that stores
personal data (portfolios, alerts, chat) adds its exporter there, and its tables reference
`users(id) ON DELETE CASCADE`, so erasure removes them with the account. The security audit
trail is kept — it is needed to investigate abuse — but anonymised: the user id is removed and
the details are emptied.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg

from api.db.alerts import AlertRepository
from api.db.chat import ConversationRepository, MessageRepository, UsageRepository
from api.db.portfolios import watchlists_of
from api.db.users import (
    ApiKeyRepository,
    ConsentRepository,
    SecurityEventRepository,
    SessionRepository,
    UserRepository,
    UserSecretRepository,
)
from api.security.crypto import Keyring, email_context
from api.services.alerts import public

Exporter = Callable[[asyncpg.Connection, uuid.UUID, Keyring], Awaitable[Any]]


async def _profile(conn: asyncpg.Connection, user_id: uuid.UUID, keyring: Keyring) -> Any:
    user = await UserRepository(conn).get(user_id)
    assert user is not None
    return {
        "id": str(user.id),
        "email": keyring.decrypt(user.email_ct, email_context(user.id)),
        "email_verified_at": user.email_verified_at,
        "display_name": user.display_name,
        "role": user.role,
        "timezone": user.timezone,
        "currency": user.currency,
        "created_at": user.created_at,
        "updated_at": user.updated_at,
    }


async def _settings(conn: asyncpg.Connection, user_id: uuid.UUID, _: Keyring) -> Any:
    user = await UserRepository(conn).get(user_id)
    return user.settings if user else {}


async def _sessions(conn: asyncpg.Connection, user_id: uuid.UUID, _: Keyring) -> Any:
    rows = await conn.fetch(
        """SELECT id, created_at, last_used_at, expires_at, revoked_at, revoked_reason, user_agent
           FROM sessions WHERE user_id = $1 ORDER BY created_at""",
        user_id,
    )
    return [dict(r) for r in rows]


async def _api_keys(conn: asyncpg.Connection, user_id: uuid.UUID, _: Keyring) -> Any:
    return [
        {
            "name": k.name,
            "prefix": k.prefix,
            "scopes": k.scopes,
            "created_at": k.created_at,
            "expires_at": k.expires_at,
            "last_used_at": k.last_used_at,
            "revoked_at": k.revoked_at,
        }
        for k in await ApiKeyRepository(conn).of_user(user_id)
    ]


async def _consents(conn: asyncpg.Connection, user_id: uuid.UUID, _: Keyring) -> Any:
    return [dict(r) for r in await ConsentRepository(conn).of_user(user_id)]


async def _secrets(conn: asyncpg.Connection, user_id: uuid.UUID, _: Keyring) -> Any:
    # which secrets are stored and when; the values are credentials and are not exported
    return [dict(r) for r in await UserSecretRepository(conn).names(user_id)]


async def _security_events(conn: asyncpg.Connection, user_id: uuid.UUID, _: Keyring) -> Any:
    return [dict(r) for r in await SecurityEventRepository(conn).of_user(user_id, limit=10_000)]


async def _portfolios(conn: asyncpg.Connection, user_id: uuid.UUID, _: Keyring) -> Any:
    out = []
    for p in await conn.fetch(
        "SELECT id, name, base_currency, created_at FROM portfolios WHERE user_id = $1 "
        "ORDER BY created_at",
        user_id,
    ):
        transactions = await conn.fetch(
            """SELECT type, date, ticker, quantity, price, amount, fee, note, created_at
               FROM portfolio_transactions WHERE portfolio_id = $1 ORDER BY date, sequence""",
            p["id"],
        )
        out.append({**dict(p), "transactions": [dict(t) for t in transactions]})
    return out


async def _watchlists(conn: asyncpg.Connection, user_id: uuid.UUID, _: Keyring) -> Any:
    return [
        {"name": r["name"], "created_at": r["created_at"], "tickers": r["tickers"]}
        for r in await watchlists_of(conn, user_id)
    ]


async def _alerts(conn: asyncpg.Connection, user_id: uuid.UUID, _: Keyring) -> Any:
    return [public(a) for a in await AlertRepository(conn).of_user(user_id)]


async def _notifications(conn: asyncpg.Connection, user_id: uuid.UUID, _: Keyring) -> Any:
    rows = await conn.fetch(
        """SELECT kind, title, data, created_at, read_at FROM notifications
           WHERE user_id = $1 ORDER BY created_at""",
        user_id,
    )
    return [{**dict(r), "data": json.loads(r["data"])} for r in rows]


async def _chat(conn: asyncpg.Connection, user_id: uuid.UUID, _: Keyring) -> Any:
    messages: dict[uuid.UUID, list[dict[str, Any]]] = {}
    for m in await MessageRepository(conn).of_user(user_id):
        messages.setdefault(m.conversation_id, []).append(
            {
                "role": m.role,
                "content": m.content,
                "provider": m.provider,
                "tools_used": m.tools_used,
                "tokens_in": m.tokens_in,
                "tokens_out": m.tokens_out,
                "created_at": m.created_at,
            }
        )
    conversations = await ConversationRepository(conn).of_user(user_id, None, 0)
    return {
        "conversations": [
            {
                "id": str(c.id),
                "title": c.title,
                "created_at": c.created_at,
                "updated_at": c.updated_at,
                "messages": messages.get(c.id, []),
            }
            for c in conversations
        ],
        "usage": [dict(r) for r in await UsageRepository(conn).of_user(user_id)],
    }


EXPORTERS: dict[str, Exporter] = {
    "profile": _profile,
    "settings": _settings,
    "sessions": _sessions,
    "api_keys": _api_keys,
    "consents": _consents,
    "stored_secrets": _secrets,
    "security_events": _security_events,
    "portfolios": _portfolios,
    "watchlists": _watchlists,
    "chat": _chat,
    "alerts": _alerts,
    "notifications": _notifications,
}


async def export_user(pool: asyncpg.Pool, user_id: uuid.UUID, keyring: Keyring) -> dict[str, Any]:
    """Every section, read in one repeatable-read transaction (a consistent snapshot)."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        sections = {
            name: await export(conn, user_id, keyring) for name, export in EXPORTERS.items()
        }
    return {"exported_at": datetime.now(UTC), "user_id": str(user_id), **sections}


async def erase_user(pool: asyncpg.Pool, user_id: uuid.UUID) -> list[uuid.UUID]:
    """Delete the account and everything that cascades from it; anonymise its audit trail.
    Returns the sessions that were live, so the caller can drop their live state."""
    async with pool.acquire() as conn, conn.transaction():
        sessions = await SessionRepository(conn).revoke_all(user_id, "account erased")
        await conn.execute(
            "UPDATE security_events SET user_id = NULL, ip_hash = NULL, detail = '{}'::jsonb "
            "WHERE user_id = $1",
            user_id,
        )
        await conn.execute("DELETE FROM users WHERE id = $1", user_id)
        await SecurityEventRepository(conn).record("account_erased", None, None)
    return sessions
