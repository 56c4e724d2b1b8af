"""Market-wide views over the bundled universe: overview, movers, sectors, sector correlation.

Aggregates use the universe's equities (users' imported tickers are theirs, not the market's)
and the S&P 500 index as benchmark. Periods end at the latest bar and start at the last trading
day on or before the period's start. Responses are cached in Redis under the latest bar date, so
a new bar moves every key and nothing stale is served.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import asyncpg
import numpy as np
import pandas as pd
from redis.asyncio import Redis

from api.cache import JsonCache
from api.db.market import BarRepository
from api.errors import NotFound, Unprocessable
from api.services.performance import period_start

BENCHMARK = "SPX"
PERIODS = ("1d", "1w", "1m", "ytd", "1y")
CACHE_TTL_S = 7 * 86_400  # keys carry the bar date; the TTL only bounds memory
CACHE_PREFIX = "market:v2"  # v2: every answer carries `as_of`


def check_period(period: str) -> None:
    """422 `invalid_period` unless `period` is one of PERIODS."""
    if period not in PERIODS:
        raise Unprocessable("invalid_period", f"period must be one of {', '.join(PERIODS)}")


def base_date(period: str, end: date) -> date:
    """The calendar date a period's return is measured from (its start); the same periods as
    portfolio performance, in lower case."""
    check_period(period)
    return period_start(period.upper(), end, end)


def period_returns(closes: pd.DataFrame, period: str) -> tuple[pd.Series, date, date]:
    """Each column's return from the last row on or before the period's start to the last row.
    For 1d that is simply the previous row."""
    end = closes.index[-1]
    if period == "1d":
        base = closes.index[-2]
    else:
        candidates = closes.index[closes.index <= pd.Timestamp(base_date(period, end.date()))]
        if len(candidates) == 0:
            raise Unprocessable("not_enough_history", f"no bars before the {period} window")
        base = candidates[-1]
    filled = closes.ffill()
    returns = filled.loc[end] / filled.loc[base] - 1.0
    return returns, base.date(), end.date()


@dataclass(frozen=True)
class Universe:
    closes: pd.DataFrame  # date x ticker, equities and the benchmark
    sectors: dict[str, str]  # equity -> GICS sector

    @property
    def equities(self) -> list[str]:
        return sorted(self.sectors)


def sector_table(universe: Universe, period: str) -> dict[str, Any]:
    returns, start, end = period_returns(universe.closes, period)
    bench = float(returns[BENCHMARK]) if BENCHMARK in returns else None
    rows = []
    by_sector: dict[str, list[str]] = {}
    for ticker, sector in universe.sectors.items():
        by_sector.setdefault(sector, []).append(ticker)
    for sector, members in sorted(by_sector.items()):
        member_returns = returns[members].dropna()
        mean = float(member_returns.mean())
        rows.append(
            {
                "sector": sector,
                "members": len(member_returns),
                "return": mean,
                "relative_strength": None if bench is None else (1 + mean) / (1 + bench) - 1,
                "breadth": float((member_returns > 0).mean()),
            }
        )
    return {
        "period": period,
        "start": start,
        "end": end,
        "benchmark_return": bench,
        "sectors": rows,
    }


def sector_correlation(universe: Universe, lookback: int) -> dict[str, Any]:
    """Correlation of equal-weighted sector daily returns over the last `lookback` days."""
    daily = universe.closes[universe.equities].pct_change(fill_method=None).iloc[-lookback:]
    sectors = sorted(set(universe.sectors.values()))
    frame = pd.DataFrame(
        {s: daily[[t for t, x in universe.sectors.items() if x == s]].mean(axis=1) for s in sectors}
    )
    matrix = frame.corr()
    return {
        "lookback_days": len(daily),
        "end": universe.closes.index[-1].date(),
        "sectors": sectors,
        "matrix": [
            [None if np.isnan(v) else round(float(v), 6) for v in row] for row in matrix.to_numpy()
        ],
    }


class MarketService:
    def __init__(self, pool: asyncpg.Pool, cache: JsonCache) -> None:
        self._pool = pool
        self._cache = cache

    @classmethod
    def cached_in(cls, pool: asyncpg.Pool, redis: Redis) -> MarketService:
        """The service with its answers cached in `redis` (the routes and chat tools share it)."""
        return cls(pool, JsonCache(redis, CACHE_PREFIX, CACHE_TTL_S))

    async def latest_date(self) -> date:
        async with self._pool.acquire() as conn:
            latest = await BarRepository(conn).last_date(BENCHMARK)
        if latest is None:
            raise NotFound("bars", "no market data yet; run `stockcopilot ingest`")
        return latest

    async def universe(self, start: date) -> Universe:
        async with self._pool.acquire() as conn:
            frame = await BarRepository(conn).universe_closes(BENCHMARK, start)
        closes = frame.pivot(index="date", columns="ticker", values="close")
        closes.index = pd.to_datetime(closes.index)
        sectors = {
            r.ticker: r.sector
            for r in frame.drop_duplicates("ticker").itertuples()
            if r.asset_type == "equity" and r.sector
        }
        return Universe(closes.sort_index(), sectors)

    async def cached(self, name: str, params: tuple, compute: Any) -> Any:
        """`compute(latest_date)`'s answer, cached under (name, params, latest bar date)."""
        latest = await self.latest_date()
        key = self._cache.key(name, *params, latest)
        (hit,) = await self._cache.get_many([key])
        if hit is not None:
            return hit
        value = await compute(latest)
        await self._cache.set_many({key: value})
        return value

    async def overview(self) -> dict[str, Any]:
        async def compute(latest: date) -> dict[str, Any]:
            universe = await self.universe(latest - timedelta(days=14))
            closes = universe.closes
            index = closes[BENCHMARK].dropna()
            last, previous = float(index.iloc[-1]), float(index.iloc[-2])
            change = (
                closes[universe.equities].ffill().iloc[-1]
                / closes[universe.equities].ffill().iloc[-2]
                - 1
            )
            return {
                "as_of": closes.index[-1].date().isoformat(),
                "index": {
                    "ticker": BENCHMARK,
                    "level": last,
                    "change": last - previous,
                    "change_pct": last / previous - 1,
                },
                "advancers": int((change > 0).sum()),
                "decliners": int((change < 0).sum()),
                "unchanged": int((change == 0).sum()),
            }

        return await self.cached("overview", (), compute)

    async def movers(self, period: str, limit: int) -> dict[str, Any]:
        check_period(period)

        async def compute(latest: date) -> dict[str, Any]:
            universe = await self.universe(latest - timedelta(days=400))
            returns, start, end = period_returns(universe.closes[universe.equities], period)
            ranked = returns.dropna().sort_values(ascending=False)

            def entry(ticker: str) -> dict[str, Any]:
                return {
                    "ticker": ticker,
                    "return": float(ranked[ticker]),
                    "sector": universe.sectors.get(ticker),
                }

            return {
                "period": period,
                "start": start.isoformat(),
                "end": end.isoformat(),
                "as_of": end.isoformat(),
                "gainers": [entry(t) for t in ranked.index[:limit] if ranked[t] > 0],
                "losers": [entry(t) for t in ranked.index[::-1][:limit] if ranked[t] < 0],
            }

        return await self.cached("movers", (period, limit), compute)

    async def sectors(self, period: str) -> dict[str, Any]:
        check_period(period)

        async def compute(latest: date) -> dict[str, Any]:
            universe = await self.universe(latest - timedelta(days=400))
            table = sector_table(universe, period)
            end = table["end"].isoformat()
            return {**table, "start": table["start"].isoformat(), "end": end, "as_of": end}

        return await self.cached("sectors", (period,), compute)

    async def correlation(self, lookback: int) -> dict[str, Any]:
        async def compute(latest: date) -> dict[str, Any]:
            universe = await self.universe(latest - timedelta(days=int(lookback * 1.6) + 10))
            result = sector_correlation(universe, lookback)
            end = result["end"].isoformat()
            return {**result, "end": end, "as_of": end}

        return await self.cached("sector-correlation", (lookback,), compute)
