"""The exchange's trading sessions (NYSE, through exchange-calendars): when the market is open,
the last session that has closed, and whether a bar of a given day is final yet.

Every equity, ETF and the S&P 500 in the universe trade on the NYSE calendar (Nasdaq shares
the same sessions), so one calendar decides polling, staleness and provisional bars.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache

import exchange_calendars as xcals
import pandas as pd

EXCHANGE = "XNYS"


@cache
def _calendar() -> xcals.ExchangeCalendar:
    return xcals.get_calendar(EXCHANGE)


def _minute(now: datetime) -> pd.Timestamp:
    stamp = pd.Timestamp(now)
    return stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp.tz_convert(UTC)


@dataclass(frozen=True)
class MarketState:
    """Where the exchange stands at one instant."""

    open: bool  # a session is trading now
    last_completed: date  # the newest session whose close has passed
    current: date | None  # the session trading now, if one is
    next_open: datetime  # when the next session opens (UTC)
    next_close: datetime  # when the current (or next) session closes (UTC)

    def final(self, day: date) -> bool:
        """Whether a bar dated `day` is final: its session has closed."""
        return day <= self.last_completed


def market_state(now: datetime | None = None) -> MarketState:
    """The exchange's state at `now` (default: the present instant)."""
    calendar = _calendar()
    minute = _minute(now or datetime.now(UTC))
    is_open = bool(calendar.is_open_on_minute(minute, ignore_breaks=True))
    previous_close = calendar.previous_close(minute)
    last_completed = calendar.minute_to_past_session(previous_close).date()
    current = calendar.minute_to_session(minute).date() if is_open else None
    return MarketState(
        open=is_open,
        last_completed=last_completed,
        current=current,
        next_open=calendar.next_open(minute).to_pydatetime(),
        next_close=calendar.next_close(minute).to_pydatetime(),
    )


def sessions_between(start: date, end: date) -> list[date]:
    """The trading sessions from `start` to `end`, inclusive."""
    if start > end:
        return []
    calendar = _calendar()
    first, last = calendar.first_session.date(), calendar.last_session.date()
    lo, hi = max(start, first), min(end, last)
    if lo > hi:
        return []
    return [s.date() for s in calendar.sessions_in_range(pd.Timestamp(lo), pd.Timestamp(hi))]


def session_close(day: date) -> datetime:
    """When the session of `day` closes (UTC; early on half days)."""
    return _calendar().session_close(pd.Timestamp(day)).to_pydatetime()
