"""Repository for the totals Prometheus scrapes (`api.metrics`): a few counts, read at most
once per scrape period."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True)
class Totals:
    users: int
    portfolios: int
    conversations: int


@dataclass(frozen=True)
class LiveLoss:
    family: str
    variant: str
    loss: float  # mean pinball loss of the live forecasts resolved in the last 7 days


class GaugeRepository:
    def __init__(self, db: asyncpg.Connection | asyncpg.Pool) -> None:
        self._db = db

    async def totals(self) -> Totals:
        row = await self._db.fetchrow(
            """SELECT (SELECT count(*) FROM users) AS users,
                      (SELECT count(*) FROM portfolios) AS portfolios,
                      (SELECT count(*) FROM conversations) AS conversations"""
        )
        assert row is not None
        return Totals(row["users"], row["portfolios"], row["conversations"])

    async def live_losses(self) -> list[LiveLoss]:
        """Per family and variant, over live forecasts resolved in the last 7 days."""
        rows = await self._db.fetch(
            """SELECT p.family, p.variant, avg(o.pinball_loss) AS loss
               FROM prediction_log p JOIN prediction_outcomes o ON o.prediction_id = p.id
               WHERE p.live AND p.clock_run = (SELECT market_run())
                 AND o.resolved_at >= now() - interval '7 days'
               GROUP BY p.family, p.variant"""
        )
        return [LiveLoss(r["family"], r["variant"], float(r["loss"])) for r in rows]
