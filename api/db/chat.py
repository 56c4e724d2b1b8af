"""Repositories for chat: conversations, their messages and per-user daily usage. Every query
names the owner or the conversation explicitly; ownership is checked once, by the router's
`owned_conversation` dependency."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import asyncpg

type Db = asyncpg.Connection | asyncpg.Pool


@dataclass(frozen=True)
class ConversationRow:
    id: uuid.UUID
    user_id: uuid.UUID
    title: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class MessageRow:
    id: int
    conversation_id: uuid.UUID
    role: str
    content: str
    provider: str | None
    tools_used: list[dict[str, Any]]
    tokens_in: int
    tokens_out: int
    created_at: datetime

    @classmethod
    def of(cls, row: asyncpg.Record) -> MessageRow:
        return cls(**{**dict(row), "tools_used": json.loads(row["tools_used"])})


_CONVERSATION = "id, user_id, title, created_at, updated_at"
_MESSAGE_COLUMNS = (
    "id",
    "conversation_id",
    "role",
    "content",
    "provider",
    "tools_used",
    "tokens_in",
    "tokens_out",
    "created_at",
)
_MESSAGE = ", ".join(_MESSAGE_COLUMNS)


class ConversationRepository:
    def __init__(self, db: Db) -> None:
        self._db = db

    async def create(self, user_id: uuid.UUID, title: str) -> ConversationRow:
        row = await self._db.fetchrow(
            f"""INSERT INTO conversations (id, user_id, title) VALUES ($1, $2, $3)
                RETURNING {_CONVERSATION}""",
            uuid.uuid4(),
            user_id,
            title,
        )
        assert row is not None
        return ConversationRow(**dict(row))

    async def owned(self, conversation_id: uuid.UUID, user_id: uuid.UUID) -> ConversationRow | None:
        row = await self._db.fetchrow(
            f"SELECT {_CONVERSATION} FROM conversations WHERE id = $1 AND user_id = $2",
            conversation_id,
            user_id,
        )
        return ConversationRow(**dict(row)) if row else None

    async def of_user(
        self, user_id: uuid.UUID, limit: int | None, offset: int
    ) -> list[ConversationRow]:
        """Most recently active first (all of them when `limit` is None)."""
        rows = await self._db.fetch(
            f"""SELECT {_CONVERSATION} FROM conversations WHERE user_id = $1
                ORDER BY updated_at DESC, id LIMIT $2 OFFSET $3""",
            user_id,
            limit,
            offset,
        )
        return [ConversationRow(**dict(r)) for r in rows]

    async def touch(self, conversation_id: uuid.UUID, title: str | None = None) -> None:
        """Mark as active now; set the title when one is given."""
        await self._db.execute(
            """UPDATE conversations SET updated_at = now(), title = coalesce($2, title)
               WHERE id = $1""",
            conversation_id,
            title,
        )

    async def delete(self, conversation_id: uuid.UUID) -> None:
        await self._db.execute("DELETE FROM conversations WHERE id = $1", conversation_id)


class MessageRepository:
    def __init__(self, db: Db) -> None:
        self._db = db

    async def add(
        self,
        conversation_id: uuid.UUID,
        role: str,
        content: str,
        provider: str | None = None,
        tools_used: list[dict[str, Any]] | None = None,
        tokens: tuple[int, int] = (0, 0),
    ) -> MessageRow:
        row = await self._db.fetchrow(
            f"""INSERT INTO chat_messages
                    (conversation_id, role, content, provider, tools_used, tokens_in, tokens_out)
                VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7) RETURNING {_MESSAGE}""",
            conversation_id,
            role,
            content,
            provider,
            json.dumps(tools_used or []),
            tokens[0],
            tokens[1],
        )
        assert row is not None
        return MessageRow.of(row)

    async def of_conversation(
        self, conversation_id: uuid.UUID, last: int | None = None
    ) -> list[MessageRow]:
        """Oldest first; only the `last` N when given (the context sent to a model)."""
        rows = await self._db.fetch(
            f"""SELECT * FROM (
                    SELECT {_MESSAGE} FROM chat_messages WHERE conversation_id = $1
                    ORDER BY id DESC LIMIT $2
                ) recent ORDER BY id""",
            conversation_id,
            last,
        )
        return [MessageRow.of(r) for r in rows]

    async def of_user(self, user_id: uuid.UUID) -> list[MessageRow]:
        rows = await self._db.fetch(
            f"""SELECT {", ".join(f"m.{c}" for c in _MESSAGE_COLUMNS)}
                FROM chat_messages m JOIN conversations c ON c.id = m.conversation_id
                WHERE c.user_id = $1 ORDER BY m.conversation_id, m.id""",
            user_id,
        )
        return [MessageRow.of(r) for r in rows]

    async def purge_before(self, cutoff: datetime) -> int:
        """Delete messages older than `cutoff`, and conversations idle since before it (all
        their messages are older still). One statement; the number of messages deleted."""
        return int(
            await self._db.fetchval(
                """WITH gone AS (DELETE FROM chat_messages WHERE created_at < $1 RETURNING 1),
                        idle AS (DELETE FROM conversations WHERE updated_at < $1)
                   SELECT count(*) FROM gone""",
                cutoff,
            )
        )


class UsageRepository:
    """Tokens and requests per user, UTC day and provider."""

    def __init__(self, db: Db) -> None:
        self._db = db

    async def record(
        self,
        user_id: uuid.UUID,
        day: date,
        provider: str,
        tokens_in: int,
        tokens_out: int,
        requests: int = 1,
    ) -> None:
        """Add to the day's tally (`requests` 0: tokens a failed attempt spent)."""
        await self._db.execute(
            """INSERT INTO chat_usage (user_id, day, provider, requests, tokens_in, tokens_out)
               VALUES ($1, $2, $3, $6, $4, $5)
               ON CONFLICT (user_id, day, provider) DO UPDATE SET
                   requests = chat_usage.requests + EXCLUDED.requests,
                   tokens_in = chat_usage.tokens_in + EXCLUDED.tokens_in,
                   tokens_out = chat_usage.tokens_out + EXCLUDED.tokens_out""",
            user_id,
            day,
            provider,
            tokens_in,
            tokens_out,
            requests,
        )

    async def tokens_on(self, user_id: uuid.UUID, day: date) -> int:
        return int(
            await self._db.fetchval(
                """SELECT coalesce(sum(tokens_in + tokens_out), 0) FROM chat_usage
                   WHERE user_id = $1 AND day = $2""",
                user_id,
                day,
            )
        )

    async def of_user(self, user_id: uuid.UUID) -> list[asyncpg.Record]:
        return await self._db.fetch(
            """SELECT day, provider, requests, tokens_in, tokens_out FROM chat_usage
               WHERE user_id = $1 ORDER BY day, provider""",
            user_id,
        )
