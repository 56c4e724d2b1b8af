"""Bring stored bars up to date from a live provider, keeping adjusted series continuous.

Stored bars are adjusted prices: the bundle's as of its snapshot, a provider's as of the day it
answered. A provider's new answer is adjusted as of *now*, so a split or dividend since the last
answer changes every earlier price. Each answer therefore starts at the newest final bar already
stored (the overlap): the ratio of the provider's close to the stored close on that day is the
factor every earlier stored bar is multiplied by (volumes by the splits reported in between),
recorded in `bar_adjustments`. A 3-for-1 split thus rescales history to the new share count,
rather than looking like a 67 % crash that fires alerts. Without an overlap bar in the answer,
the reported splits alone give the factor.

A bar of a session still trading is stored provisional and replaced when final (migration
0011); forecasts are only ever scored on final bars.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from datetime import date, timedelta

import asyncpg
import pandas as pd

from api.db.market import BarRepository
from features.live import CorporateAction, LiveProvider, ProviderAnswer
from features.sessions import MarketState

FIRST_WINDOW_DAYS = 30  # a ticker with no stored bar starts with a month of history
RESCALE_TOLERANCE = 1e-4  # below this the overlap ratio is rounding, not an adjustment


@dataclass
class TickerUpdate:
    """What one update did to one ticker's bars (the per-ticker summary of `data update`)."""

    ticker: str
    added: int = 0  # bars inserted or replaced
    provisional: int = 0  # of which from a session still trading
    rescaled: int = 0  # earlier bars multiplied for a split or dividend
    actions: list[str] = field(default_factory=list)  # new corporate actions, described
    newest: date | None = None  # the newest bar stored now
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _describe(action: CorporateAction) -> str:
    parts = []
    if action.split != 1.0:
        parts.append(f"split {action.split:g}:1")
    if action.dividend:
        parts.append(f"dividend {action.dividend:g}")
    return f"{action.ex_date} {' and '.join(parts)}"


def _factors(
    answer: ProviderAnswer, overlap: date, stored: tuple[float, float | None] | None
) -> tuple[float, float]:
    """(price factor, volume factor) that bring stored bars up to `overlap` onto the answer's
    adjustment."""
    splits = math.prod(a.split for a in answer.actions if a.ex_date > overlap)
    on_overlap = answer.bars.loc[answer.bars["date"] == pd.Timestamp(overlap), "close"]
    if stored is not None and not on_overlap.empty and stored[0] > 0:
        return float(on_overlap.iloc[0]) / stored[0], splits
    return 1.0 / splits, splits


async def store_answer(
    conn: asyncpg.Connection, answer: ProviderAnswer, overlap: date | None, state: MarketState
) -> tuple[TickerUpdate, pd.DataFrame]:
    """Store one provider answer in one transaction; returns the summary and the bars new since
    the overlap (with their `final` flag), which the feed then announces."""
    update = TickerUpdate(answer.ticker)
    bars = answer.bars.copy()
    if bars.empty:
        return update, bars
    bars["final"] = [state.final(d.date()) for d in bars["date"]]
    repo = BarRepository(conn)
    async with conn.transaction():
        if overlap is not None:
            stored = await repo.stored_bar(answer.ticker, overlap)
            price, volume = _factors(answer, overlap, stored)
            if abs(price - 1.0) > RESCALE_TOLERANCE or volume != 1.0:
                since = [a for a in answer.actions if a.ex_date > overlap]
                why = ", ".join(map(_describe, since)) or "the provider's adjustment changed"
                update.rescaled = await repo.rescale(
                    answer.ticker, overlap, price, volume, f"{answer.bars['source'].iloc[0]}: {why}"
                )
        await repo.upsert(bars)
        known = [(a.ticker, a.ex_date, a.split, a.dividend) for a in answer.actions]
        if await repo.record_actions(known, str(bars["source"].iloc[0])):
            update.actions = [_describe(a) for a in answer.actions]
    new = bars if overlap is None else bars[bars["date"] > pd.Timestamp(overlap)]
    update.added = len(new)
    update.provisional = int((~new["final"]).sum())
    update.newest = bars["date"].max().date()
    return update, new.reset_index(drop=True)


class BarSync:
    """Fetch and store each ticker's bars since its newest final one."""

    def __init__(self, pool: asyncpg.Pool, provider: LiveProvider) -> None:
        self._pool = pool
        self._provider = provider

    @property
    def provider(self) -> str:
        return self._provider.name

    async def overlaps(self, tickers: list[str]) -> dict[str, date | None]:
        """Each ticker's overlap bar: the newest final bar stored (None: none yet)."""
        async with self._pool.acquire() as conn:
            return await BarRepository(conn).last_final_dates(tickers)

    async def update(
        self, ticker: str, overlap: date | None, state: MarketState
    ) -> tuple[TickerUpdate, pd.DataFrame]:
        """Fetch from the overlap bar to the session trading now (or the last completed one)
        and store it; nothing is fetched when the final bar of the last completed session is
        stored already. Provider errors propagate (the caller decides on backoff)."""
        end = state.current or state.last_completed
        if overlap is not None and overlap >= end:
            return TickerUpdate(ticker, newest=overlap), pd.DataFrame()
        start = overlap or end - timedelta(days=FIRST_WINDOW_DAYS)
        answer = await asyncio.to_thread(self._provider.daily_bars, ticker, start, end)
        async with self._pool.acquire() as conn:
            return await store_answer(conn, answer, overlap, state)
