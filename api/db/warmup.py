"""Warm-up tasks of the current start (migration 0012): what `stockcopilot up` still does after
the API is ready, so /readyz can say what is warming up on every replica."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg

type Db = asyncpg.Connection | asyncpg.Pool
type WarmupState = Literal["pending", "running", "done", "failed"]


@dataclass(frozen=True)
class WarmupTaskRow:
    name: str
    state: WarmupState
    detail: str
    started_at: datetime | None
    finished_at: datetime | None


class WarmupRepository:
    def __init__(self, db: Db) -> None:
        self._db = db

    async def plan(self, names: list[str]) -> None:
        """A new start's tasks, all pending; an earlier start's other rows go."""
        await self._db.execute("DELETE FROM warmup_tasks WHERE name <> ALL($1::text[])", names)
        await self._db.execute(
            """INSERT INTO warmup_tasks (name, position, state)
               SELECT name, position, 'pending' FROM unnest($1::text[]) WITH ORDINALITY
                   AS t(name, position)
               ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position,
                   state = 'pending', detail = '', started_at = NULL, finished_at = NULL""",
            names,
        )

    async def update(self, name: str, state: WarmupState, detail: str = "") -> None:
        await self._db.execute(
            """UPDATE warmup_tasks SET state = $2, detail = $3,
                   started_at = CASE WHEN $2 = 'running' THEN coalesce(started_at, now())
                                     ELSE started_at END,
                   finished_at = CASE WHEN $2 IN ('done', 'failed') THEN now() END
               WHERE name = $1""",
            name,
            state,
            detail[:300],
        )

    async def tasks(self) -> list[WarmupTaskRow]:
        rows = await self._db.fetch(
            """SELECT name, state, detail, started_at, finished_at FROM warmup_tasks
               ORDER BY position"""
        )
        return [WarmupTaskRow(**dict(r)) for r in rows]
