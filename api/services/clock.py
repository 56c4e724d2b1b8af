"""The product's "today": the replay day of the market clock, or the real date.

Queries are bounded by the clock in SQL (`visible_bars`); this is the same clock for Python: the
date a user's write takes ("a transaction today"), and the last completed session that decides
whether data is `stale`. Readings are kept `TTL_S` seconds in memory: a reading a moment old is
at worst a day behind a fast replay, which hides nothing that should be seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import asyncpg

from api.cache import TtlCache
from api.db.clock import MarketClockRepository
from features.sessions import market_state

TTL_S = 0.5
EXCHANGE_TZ = ZoneInfo("America/New_York")


@dataclass(frozen=True)
class ClockNow:
    today: date  # the date "today" means: the replay day, or the exchange's local date
    last_session: date  # the newest completed session: data older than it is stale
    simulated: bool  # a replay's clock, not the real one
    run: int  # the replay's pass (0 on the real clock)

    def stale(self, as_of: date | None) -> bool:
        """Data whose newest bar is older than the last completed session is stale."""
        return as_of is None or as_of < self.last_session


class MarketClock:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._cache: TtlCache[str, ClockNow] = TtlCache(TTL_S)

    async def now(self) -> ClockNow:
        return await self._cache.get_or_load("now", self._read)

    async def _read(self) -> ClockNow:
        reading = await MarketClockRepository(self._pool).read()
        if reading is not None:
            return ClockNow(reading.day, reading.day, simulated=True, run=reading.run)
        now = datetime.now(UTC)
        return ClockNow(
            now.astimezone(EXCHANGE_TZ).date(),
            market_state(now).last_completed,
            simulated=False,
            run=0,
        )
