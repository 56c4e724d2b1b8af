"""The market clock and the feed's health (migration 0011).

The clock is one row in Postgres, so every replica and every query sees the same "today" at
once: SQL reads bars through `visible_bars` (`date <= (SELECT market_today())`, read once per
query), and forecasts are logged under `market_run()`. Without a row the real clock applies
and nothing is hidden.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

import asyncpg

type Db = asyncpg.Connection | asyncpg.Pool


@dataclass(frozen=True)
class ClockReading:
    day: date  # the simulated "today": no query sees a bar after it
    run: int  # the replay's pass; a loop starts a new one
    started_at: datetime


class MarketClockRepository:
    def __init__(self, db: Db) -> None:
        self._db = db

    async def read(self) -> ClockReading | None:
        """The simulated clock, or None when the real clock applies."""
        row = await self._db.fetchrow("SELECT day, run, started_at FROM market_clock")
        return None if row is None else ClockReading(row["day"], row["run"], row["started_at"])

    async def start_run(self, day: date) -> ClockReading:
        """A new pass of the replay from `day`, under a run number never used before."""
        row = await self._db.fetchrow(
            """INSERT INTO market_clock (day, run) VALUES ($1, nextval('market_clock_runs'))
               ON CONFLICT (singleton) DO UPDATE SET day = EXCLUDED.day, run = EXCLUDED.run,
                   started_at = now(), moved_at = now()
               RETURNING day, run, started_at""",
            day,
        )
        assert row is not None
        return ClockReading(row["day"], row["run"], row["started_at"])

    async def advance(self, day: date) -> None:
        """Move the current run's clock to `day` (a resumed replay starts a run if none is)."""
        status = await self._db.execute("UPDATE market_clock SET day = $1, moved_at = now()", day)
        if status == "UPDATE 0":
            await self.start_run(day)

    async def stop(self) -> None:
        """Back to the real clock (`FEED_MODE=live`, or the end of a replay test)."""
        await self._db.execute("DELETE FROM market_clock")


@dataclass(frozen=True)
class FeedStatus:
    provider: str
    last_attempt: datetime | None
    last_success: datetime | None
    newest_bar: date | None
    last_error: str | None
    failures: int  # consecutive failed rounds


class FeedStatusRepository:
    def __init__(self, db: Db) -> None:
        self._db = db

    async def read(self) -> FeedStatus | None:
        row = await self._db.fetchrow(
            """SELECT provider, last_attempt, last_success, newest_bar, last_error, failures
               FROM feed_status"""
        )
        return None if row is None else FeedStatus(**dict(row))

    async def succeeded(self, provider: str, newest_bar: date | None) -> None:
        await self._db.execute(
            """INSERT INTO feed_status (provider, last_attempt, last_success, newest_bar)
               VALUES ($1, now(), now(), $2)
               ON CONFLICT (singleton) DO UPDATE SET provider = EXCLUDED.provider,
                   last_attempt = now(), last_success = now(),
                   newest_bar = greatest(feed_status.newest_bar, EXCLUDED.newest_bar),
                   last_error = NULL, failures = 0""",
            provider,
            newest_bar,
        )

    async def failed(self, provider: str, error: str) -> None:
        await self._db.execute(
            """INSERT INTO feed_status (provider, last_attempt, last_error, failures)
               VALUES ($1, now(), $2, 1)
               ON CONFLICT (singleton) DO UPDATE SET provider = EXCLUDED.provider,
                   last_attempt = now(), last_error = EXCLUDED.last_error,
                   failures = feed_status.failures + 1""",
            provider,
            error[:500],
        )
