"""Notifications: stored ones (alerts) and live-only ones (portfolio events), pushed to the
owner's `/ws/notifications` sockets through Redis, and alert notices by e-mail for the users who
opted in."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from api import channels
from api.db.alerts import NewNotification, NotificationRepository, NotificationRow
from api.db.portfolios import PortfolioRow
from api.db.users import UserRepository
from api.errors import ProblemError
from api.security.crypto import Keyring, email_context
from api.security.mail import AlertEmail, EmailSender
from api.services.preferences import preferences

log = structlog.get_logger(__name__)


def notification_payload(row: NotificationRow) -> dict[str, Any]:
    """The WebSocket message (and REST item) of one stored notification."""
    return {
        "type": "notification",
        "id": str(row.id),
        "kind": row.kind,
        "title": row.title,
        "data": row.data,
        "created_at": row.created_at.isoformat(),
        "read": row.read_at is not None,
    }


def portfolio_event(portfolio: PortfolioRow, event: str, title: str, **data: Any) -> dict[str, Any]:
    """The live-only message of a change to a portfolio, for the owner's other devices."""
    return {
        "type": "notification",
        "kind": "portfolio",
        "title": f"{portfolio.name}: {title}",
        "data": {"portfolio_id": str(portfolio.id), "event": event, **data},
        "created_at": datetime.now(UTC).isoformat(),
    }


@dataclass(frozen=True)
class AlertMailer:
    """Alert notices by e-mail, for the users who turned `notifications.email` on."""

    sender: EmailSender
    keyring: Keyring

    async def send(self, pool: asyncpg.Pool, rows: Sequence[NotificationRow]) -> None:
        alerts = [r for r in rows if r.kind == "alert"]
        users = UserRepository(pool)
        for user_id in sorted({r.user_id for r in alerts}):
            user = await users.get(user_id)
            if user is None or not preferences(user.settings).notifications.email:
                continue
            address = self.keyring.decrypt(user.email_ct, email_context(user.id))
            for row in (r for r in alerts if r.user_id == user_id):
                await self.sender.send(AlertEmail(address, row.title, _alert_detail(row.data)))


def _alert_detail(data: dict[str, Any]) -> str:
    detail = f"Seen on the close of {data.get('date')} (value {data.get('value')})."
    return f"{detail}\nYour note: {data['note']}" if data.get("note") else detail


class Notifier:
    """Stores notifications, then publishes each on its user's channel for the WebSockets (and
    e-mails alerts to those who opted in). Storing comes first: a notification is never pushed
    or mailed without being kept."""

    def __init__(self, pool: asyncpg.Pool, redis: Redis, mailer: AlertMailer | None = None) -> None:
        self._pool = pool
        self._redis = redis
        self._mailer = mailer

    async def notify(self, notes: Sequence[NewNotification]) -> list[NotificationRow]:
        rows = await NotificationRepository(self._pool).add_many(notes)
        await self.push([(r.user_id, notification_payload(r)) for r in rows])
        if self._mailer is not None:
            await self._mailer.send(self._pool, rows)
        return rows

    async def push(self, messages: Sequence[tuple[uuid.UUID, dict[str, Any]]]) -> None:
        """Publish live-only messages (e.g. portfolio events); best effort when Redis is down."""
        if not messages:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for user_id, message in messages:
                    pipe.publish(channels.user_channel(user_id), json.dumps(message, default=str))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("notify_redis_unavailable", error=type(exc).__name__)

    async def announce(self, portfolio: PortfolioRow, event: str, title: str, **data: Any) -> None:
        """A live portfolio event for the owner's other devices (`/ws/notifications`)."""
        await self.push([(portfolio.user_id, portfolio_event(portfolio, event, title, **data))])


class NotificationService:
    """A user's stored notifications: paging, unread count, marking read, deleting."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._repo = NotificationRepository(pool)

    async def page(
        self, user_id: uuid.UUID, unread_only: bool, limit: int, before: datetime | None
    ) -> tuple[list[NotificationRow], int]:
        """Newest first, and how many are unread in all."""
        rows = await self._repo.page(user_id, unread_only, limit, before)
        return rows, await self._repo.unread_count(user_id)

    async def unread_count(self, user_id: uuid.UUID) -> int:
        return await self._repo.unread_count(user_id)

    async def mark_read(self, user_id: uuid.UUID, ids: Sequence[uuid.UUID] | None) -> int:
        """Mark the given notifications (all when `ids` is None) read; returns how many."""
        return await self._repo.mark_read(user_id, ids)

    async def delete(self, user_id: uuid.UUID, notification_id: uuid.UUID) -> None:
        if not await self._repo.delete(user_id, notification_id):
            raise ProblemError(404, "notification_not_found", "no such notification")
