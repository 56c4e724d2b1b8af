"""Repository for the model alias audit trail."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True)
class AliasEvent:
    model: str
    alias: str
    from_version: str | None
    to_version: str | None
    actor: str
    reason: str
    at: datetime | None = None


class AliasEventRepository:
    def __init__(self, db: asyncpg.Connection | asyncpg.Pool) -> None:
        self._db = db

    async def record(self, event: AliasEvent) -> None:
        await self._db.execute(
            """INSERT INTO model_alias_events
                   (model, alias, from_version, to_version, actor, reason)
               VALUES ($1, $2, $3, $4, $5, $6)""",
            event.model,
            event.alias,
            event.from_version,
            event.to_version,
            event.actor,
            event.reason,
        )

    async def history(
        self,
        model: str,
        alias: str | None = None,
        limit: int = 100,
    ) -> list[AliasEvent]:
        rows = await self._db.fetch(
            """SELECT model, alias, from_version, to_version, actor, reason, at
               FROM model_alias_events WHERE model = $1 AND ($2::text IS NULL OR alias = $2)
               ORDER BY id DESC LIMIT $3""",
            model,
            alias,
            limit,
        )
        return [AliasEvent(**dict(r)) for r in rows]
