"""GDPR: export everything we hold about a user, and erase it.

The export is assembled from `EXPORTERS`, one per kind of personal data; a feature that stores
personal data (portfolios, alerts, chat) adds its exporter there, and its tables reference
`users(id) ON DELETE CASCADE`, so erasure removes them with the account. The security audit
trail is kept — it is needed to investigate abuse — but anonymised: the user id is removed and
the details are emptied.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg

from api.db.alerts import AlertRepository, NotificationRepository
from api.db.chat import ConversationRepository, MessageRepository, UsageRepository
from api.db.portfolios import PortfolioRepository, TransactionRepository
from api.db.users import (
    ApiKeyRepository,
    ConsentRepository,
    SecurityEventRepository,
    SessionRepository,
    UserRepository,
    UserSecretRepository,
)
from api.db.watchlists import WatchlistRepository
from api.security.crypto import Keyring, email_context
from api.services.alerts import public

Exporter = Callable[[asyncpg.Connection, uuid.UUID, Keyring], Awaitable[Any]]


def _picked(row: Any, *names: str) -> dict[str, Any]:
    """The named attributes of a row, in that order: what the export shows of it."""
    return {name: getattr(row, name) for name in names}


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


_SESSION_FIELDS = (
    "id",
    "created_at",
    "last_used_at",
    "expires_at",
    "revoked_at",
    "revoked_reason",
    "user_agent",
)


async def _sessions(conn: asyncpg.Connection, user_id: uuid.UUID, _: Keyring) -> Any:
    sessions = await SessionRepository(conn).of_user(user_id)
    return [_picked(s, *_SESSION_FIELDS) for s in sessions]


async def _api_keys(conn: asyncpg.Connection, user_id: uuid.UUID, _: Keyring) -> Any:
    fields = ("name", "prefix", "scopes", "created_at", "expires_at", "last_used_at", "revoked_at")
    return [_picked(k, *fields) for k in await ApiKeyRepository(conn).of_user(user_id)]


async def _consents(conn: asyncpg.Connection, user_id: uuid.UUID, _: Keyring) -> Any:
    return [dict(r) for r in await ConsentRepository(conn).of_user(user_id)]


async def _secrets(conn: asyncpg.Connection, user_id: uuid.UUID, _: Keyring) -> Any:
    # which secrets are stored and when; the values are credentials and are not exported
    return [dict(r) for r in await UserSecretRepository(conn).names(user_id)]


async def _security_events(conn: asyncpg.Connection, user_id: uuid.UUID, _: Keyring) -> Any:
    return [dict(r) for r in await SecurityEventRepository(conn).of_user(user_id, limit=10_000)]


_TRANSACTION_FIELDS = ("type", "date", "ticker", "quantity", "price", "amount", "fee", "note")


async def _portfolios(conn: asyncpg.Connection, user_id: uuid.UUID, _: Keyring) -> Any:
    out = []
    for p in await PortfolioRepository(conn).of_user(user_id):
        ledger = await TransactionRepository(conn).ledger(p.id)
        transactions = [_picked(t, *_TRANSACTION_FIELDS, "created_at") for t in ledger]
        portfolio = _picked(p, "id", "name", "base_currency", "created_at")
        out.append({**portfolio, "transactions": transactions})
    return out


async def _watchlists(conn: asyncpg.Connection, user_id: uuid.UUID, _: Keyring) -> Any:
    watchlists = await WatchlistRepository(conn).of_user(user_id)
    return [_picked(w, "name", "created_at", "tickers") for w in watchlists]


async def _alerts(conn: asyncpg.Connection, user_id: uuid.UUID, _: Keyring) -> Any:
    return [public(a) for a in await AlertRepository(conn).of_user(user_id)]


async def _notifications(conn: asyncpg.Connection, user_id: uuid.UUID, _: Keyring) -> Any:
    fields = ("kind", "title", "data", "created_at", "read_at")
    return [_picked(n, *fields) for n in await NotificationRepository(conn).of_user(user_id)]


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
        await SecurityEventRepository(conn).anonymise(user_id)
        await UserRepository(conn).delete(user_id)
        await SecurityEventRepository(conn).record("account_erased", None, None)
    return sessions
