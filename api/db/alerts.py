"""Repositories for alerts and notifications. Every user-facing query names the owner."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import asyncpg

type Db = asyncpg.Connection | asyncpg.Pool

type NewNotification = tuple[uuid.UUID, str, str, dict[str, Any], uuid.UUID | None]
"""(user, kind, title, data, alert) of a notification to store."""


@dataclass(frozen=True)
class AlertRow:
    id: uuid.UUID
    user_id: uuid.UUID
    kind: str
    ticker: str | None
    portfolio_id: uuid.UUID | None
    condition: dict[str, Any]
    note: str
    active: bool
    last_state: bool | None
    last_checked: date | None
    last_fired_at: datetime | None
    fired_count: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, record: asyncpg.Record) -> AlertRow:
        values = dict(record)
        values["condition"] = json.loads(values["condition"])
        return cls(**values)


@dataclass(frozen=True)
class AlertCheck:
    """One evaluation: the state seen on `day` and whether it fired."""

    alert_id: uuid.UUID
    day: date
    state: bool
    fired: bool


@dataclass(frozen=True)
class NotificationRow:
    id: uuid.UUID
    user_id: uuid.UUID
    kind: str
    title: str
    data: dict[str, Any]
    alert_id: uuid.UUID | None
    created_at: datetime
    read_at: datetime | None

    @classmethod
    def of(cls, record: asyncpg.Record) -> NotificationRow:
        values = dict(record)
        values["data"] = json.loads(values["data"])
        return cls(**values)


_ALERT = """id, user_id, kind, ticker, portfolio_id, condition, note, active, last_state,
            last_checked, last_fired_at, fired_count, created_at, updated_at"""
_NOTE = "id, user_id, kind, title, data, alert_id, created_at, read_at"


class AlertRepository:
    def __init__(self, db: Db) -> None:
        self._db = db

    async def create(
        self,
        user_id: uuid.UUID,
        kind: str,
        ticker: str | None,
        portfolio_id: uuid.UUID | None,
        condition: dict[str, Any],
        note: str,
        active: bool,
    ) -> AlertRow:
        row = await self._db.fetchrow(
            f"""INSERT INTO alerts
                       (id, user_id, kind, ticker, portfolio_id, condition, note, active)
                VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8) RETURNING {_ALERT}""",
            uuid.uuid4(),
            user_id,
            kind,
            ticker,
            portfolio_id,
            json.dumps(condition),
            note,
            active,
        )
        return AlertRow.of(row)

    async def count(self, user_id: uuid.UUID) -> int:
        return await self._db.fetchval("SELECT count(*) FROM alerts WHERE user_id = $1", user_id)

    async def of_user(self, user_id: uuid.UUID) -> list[AlertRow]:
        rows = await self._db.fetch(
            f"SELECT {_ALERT} FROM alerts WHERE user_id = $1 ORDER BY created_at, id", user_id
        )
        return [AlertRow.of(r) for r in rows]

    async def get(self, user_id: uuid.UUID, alert_id: uuid.UUID) -> AlertRow | None:
        row = await self._db.fetchrow(
            f"SELECT {_ALERT} FROM alerts WHERE user_id = $1 AND id = $2", user_id, alert_id
        )
        return None if row is None else AlertRow.of(row)

    async def replace(
        self,
        user_id: uuid.UUID,
        alert_id: uuid.UUID,
        ticker: str | None,
        portfolio_id: uuid.UUID | None,
        kind: str,
        condition: dict[str, Any],
        note: str,
        active: bool,
    ) -> AlertRow | None:
        """A new condition starts afresh: its remembered state is cleared."""
        row = await self._db.fetchrow(
            f"""UPDATE alerts SET kind = $3, ticker = $4, portfolio_id = $5,
                   condition = $6::jsonb, note = $7, active = $8, last_state = NULL,
                   last_checked = NULL, updated_at = now()
                WHERE user_id = $1 AND id = $2 RETURNING {_ALERT}""",
            user_id,
            alert_id,
            kind,
            ticker,
            portfolio_id,
            json.dumps(condition),
            note,
            active,
        )
        return None if row is None else AlertRow.of(row)

    async def update(
        self, user_id: uuid.UUID, alert_id: uuid.UUID, note: str | None, active: bool | None
    ) -> AlertRow | None:
        row = await self._db.fetchrow(
            f"""UPDATE alerts SET note = coalesce($3, note), active = coalesce($4, active),
                   updated_at = now()
                WHERE user_id = $1 AND id = $2 RETURNING {_ALERT}""",
            user_id,
            alert_id,
            note,
            active,
        )
        return None if row is None else AlertRow.of(row)

    async def delete(self, user_id: uuid.UUID, alert_id: uuid.UUID) -> bool:
        status = await self._db.execute(
            "DELETE FROM alerts WHERE user_id = $1 AND id = $2", user_id, alert_id
        )
        return status.endswith(" 1")

    async def due(self, tickers: Sequence[str], day: date) -> list[AlertRow]:
        """Active alerts to evaluate on `day`: those on the day's tickers, and every portfolio
        alert; an alert already evaluated on `day` is skipped (a day processed twice fires once).
        """
        rows = await self._db.fetch(
            f"""SELECT {_ALERT} FROM alerts
                WHERE active AND (ticker = ANY($1::text[]) OR kind = 'drawdown')
                  AND last_checked IS DISTINCT FROM $2
                ORDER BY created_at, id""",
            list(tickers),
            day,
        )
        return [AlertRow.of(r) for r in rows]

    async def record_checks(self, checks: Sequence[AlertCheck]) -> None:
        await self._db.executemany(
            """UPDATE alerts SET last_state = $2, last_checked = $3,
                   last_fired_at = CASE WHEN $4 THEN now() ELSE last_fired_at END,
                   fired_count = fired_count + CASE WHEN $4 THEN 1 ELSE 0 END
               WHERE id = $1""",
            [(c.alert_id, c.state, c.day, c.fired) for c in checks],
        )


class NotificationRepository:
    def __init__(self, db: Db) -> None:
        self._db = db

    async def add_many(self, notes: Sequence[NewNotification]) -> list[NotificationRow]:
        """Store (user, kind, title, data, alert) tuples; returns the rows in the same order."""
        if not notes:
            return []
        ids = [uuid.uuid4() for _ in notes]
        rows = await self._db.fetch(
            f"""INSERT INTO notifications (id, user_id, kind, title, data, alert_id)
                SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[],
                                     $5::jsonb[], $6::uuid[])
                RETURNING {_NOTE}""",
            ids,
            [n[0] for n in notes],
            [n[1] for n in notes],
            [n[2] for n in notes],
            [json.dumps(n[3], default=str) for n in notes],
            [n[4] for n in notes],
        )
        by_id = {r["id"]: NotificationRow.of(r) for r in rows}
        return [by_id[i] for i in ids]

    async def page(
        self, user_id: uuid.UUID, unread_only: bool, limit: int, before: datetime | None
    ) -> list[NotificationRow]:
        rows = await self._db.fetch(
            f"""SELECT {_NOTE} FROM notifications
                WHERE user_id = $1 AND (NOT $2 OR read_at IS NULL)
                  AND ($4::timestamptz IS NULL OR created_at < $4)
                ORDER BY created_at DESC, id LIMIT $3""",
            user_id,
            unread_only,
            limit,
            before,
        )
        return [NotificationRow.of(r) for r in rows]

    async def of_user(self, user_id: uuid.UUID) -> list[NotificationRow]:
        """Every notification of the user, oldest first."""
        rows = await self._db.fetch(
            f"SELECT {_NOTE} FROM notifications WHERE user_id = $1 ORDER BY created_at", user_id
        )
        return [NotificationRow.of(r) for r in rows]

    async def unread_count(self, user_id: uuid.UUID) -> int:
        return await self._db.fetchval(
            "SELECT count(*) FROM notifications WHERE user_id = $1 AND read_at IS NULL", user_id
        )

    async def mark_read(self, user_id: uuid.UUID, ids: Sequence[uuid.UUID] | None) -> int:
        """Mark the given notifications (all when `ids` is None) read; returns how many."""
        status = await self._db.execute(
            """UPDATE notifications SET read_at = now()
               WHERE user_id = $1 AND read_at IS NULL AND ($2::uuid[] IS NULL OR id = ANY($2))""",
            user_id,
            None if ids is None else list(ids),
        )
        return int(status.split()[-1])

    async def delete(self, user_id: uuid.UUID, notification_id: uuid.UUID) -> bool:
        status = await self._db.execute(
            "DELETE FROM notifications WHERE user_id = $1 AND id = $2", user_id, notification_id
        )
        return status.endswith(" 1")
