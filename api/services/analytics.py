"""Portfolio analytics (read-only): value history on the NYSE trading calendar, time- and
money-weighted returns against the S&P 500, risk, and suggested weights (skfolio).

The arithmetic is in `api.services.performance` (pure functions); this module gathers the
ledger and the closes it needs and answers in the response schemas below.
"""

from __future__ import annotations

from datetime import date, timedelta
from functools import lru_cache
from typing import Any

import asyncpg
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from api.db.market import BarRepository, InstrumentRepository
from api.db.portfolios import PortfolioRow
from api.errors import Unprocessable
from api.schemas import EARLIEST_DAY
from api.services.clock import MarketClock
from api.services.ledger import Entry, replay
from api.services.performance import (
    daily_returns,
    period_return,
    risk_report,
    tracks_cash,
    value_history,
)
from api.services.portfolios import PortfolioService

BENCHMARK = "SPX"  # the S&P 500 index from the bundled data
PERIODS = ("1D", "1W", "1M", "YTD", "1Y", "Max")
NOT_ADVICE = (
    "Not financial advice: weights fitted to past returns of your current holdings "
    "(in-sample); past returns do not predict future ones."
)


class ValuePoint(BaseModel):
    date: date
    value: float
    flow: float = Field(description="money put in (+) or taken out (−) that day")


class PeriodOut(BaseModel):  # validated from a `performance.PeriodReturn`
    model_config = ConfigDict(from_attributes=True)

    period: str
    start: date
    end: date
    time_weighted: float
    money_weighted: float | None = Field(description="XIRR, annualised")
    benchmark: float | None = Field(description="S&P 500 over the same days")
    excess: float | None


class PerformanceOut(BaseModel):
    holdings_only: bool | None = Field(
        description="no deposits or withdrawals recorded: buys count as money in, sells and "
        "dividends as money out, and cash is left out of the value"
    )
    benchmark: str
    history: list[ValuePoint]
    periods: list[PeriodOut]


class RiskMetrics(BaseModel):  # validated from a `performance.RiskReport`
    model_config = ConfigDict(from_attributes=True)

    days: int
    volatility: float = Field(description="annualised standard deviation of daily returns")
    beta: float | None = Field(description="against the S&P 500")
    sharpe: float | None = Field(description="annualised, risk-free rate 0")
    sortino: float | None
    max_drawdown: float
    var_95: float = Field(description="one-day historical value at risk, 95%, as a loss")
    cvar_95: float = Field(description="one-day expected shortfall beyond the VaR, 95%")


class RiskOut(BaseModel):
    metrics: RiskMetrics
    correlation: dict[str, dict[str, float | None]]
    allocation: dict[str, float] = Field(description="share of value by sector (and cash)")


class OptimizeOut(BaseModel):
    method: str
    weights: dict[str, float]
    in_sample: dict[str, float]
    note: str


@lru_cache(maxsize=1)
def _calendar() -> Any:
    import exchange_calendars

    # from the earliest day a transaction may carry, so any ledger can be valued
    return exchange_calendars.get_calendar("XNYS", start=EARLIEST_DAY.isoformat())


def trading_days(start: date, end: date) -> pd.DatetimeIndex:
    """NYSE sessions in [start, end] (exchange-calendars)."""
    sessions = _calendar().sessions_in_range(pd.Timestamp(start), pd.Timestamp(end))
    return pd.DatetimeIndex(sessions.tz_localize(None) if sessions.tz else sessions)


class PortfolioAnalytics:
    """Value history, returns, risk and optimisation of one portfolio (read-only), up to the
    market's today (`clock`: the app's, else one of its own)."""

    def __init__(self, pool: asyncpg.Pool, clock: MarketClock | None = None) -> None:
        self._pool = pool
        self._ledger = PortfolioService(pool)
        self._clock = clock or MarketClock(pool)

    async def closes(self, tickers: list[str], start: date, end: date) -> pd.DataFrame:
        async with self._pool.acquire() as conn:
            return await BarRepository(conn).closes(tickers, start, end)

    async def _end(self, today: date) -> date:
        """The benchmark's newest bar (the clock bounds it), or `today` when it has none."""
        async with self._pool.acquire() as conn:
            last = await BarRepository(conn).last_date(BENCHMARK)
        return last or today

    async def history(
        self, portfolio: PortfolioRow
    ) -> tuple[list[Entry], pd.DataFrame, pd.DataFrame] | None:
        """(entries, daily value history, daily closes incl. the benchmark), or None if empty.
        Entries after the market's today (recorded before a replay began) have not happened."""
        today = (await self._clock.now()).today
        entries = [e for e in await self._ledger.entries(portfolio) if e.date <= today]
        if not entries:
            return None
        first = min(e.date for e in entries)
        end = max(await self._end(today), max(e.date for e in entries))
        days = trading_days(first, end)
        if len(days) == 0:
            days = pd.DatetimeIndex([pd.Timestamp(first)])
        tickers = sorted({e.ticker for e in entries if e.ticker})
        closes = await self.closes([*tickers, BENCHMARK], first - timedelta(days=10), end)
        closes = closes.reindex(closes.index.union(days)).ffill().reindex(days)
        return entries, value_history(entries, closes, days), closes

    async def performance(self, portfolio: PortfolioRow) -> PerformanceOut:
        found = await self.history(portfolio)
        if found is None:
            return PerformanceOut(holdings_only=None, benchmark=BENCHMARK, history=[], periods=[])
        entries, history, closes = found
        benchmark = closes.get(BENCHMARK)
        return PerformanceOut(
            holdings_only=not tracks_cash(entries),
            benchmark=BENCHMARK,
            history=[
                ValuePoint(date=d.date(), value=round(v, 6), flow=round(f, 6))
                for d, v, f in history[["value", "flow"]].itertuples()
            ],
            periods=[
                PeriodOut.model_validate(period_return(p, history, benchmark)) for p in PERIODS
            ],
        )

    async def risk(self, portfolio: PortfolioRow, lookback_days: int) -> RiskOut:
        found = await self.history(portfolio)
        if found is None:
            raise Unprocessable("no_history", "the portfolio has no transactions yet")
        entries, history, closes = found
        returns = daily_returns(history).iloc[-lookback_days:]
        if len(returns) < 20:
            raise Unprocessable(
                "too_little_history", f"risk needs 20 trading days of value; have {len(returns)}"
            )
        bench = closes[BENCHMARK].pct_change().dropna() if BENCHMARK in closes else None
        book = replay(entries)
        held = sorted(t for t, p in book.positions.items() if p.quantity > 0)
        last = closes.iloc[-1]
        values = {t: float(book.positions[t].quantity) * float(last.get(t, np.nan)) for t in held}
        sectors = await InstrumentRepository(self._pool).sectors(held)
        allocation: dict[str, float] = {}
        for ticker, value in values.items():
            if np.isfinite(value):
                allocation[sectors.get(ticker) or "Unclassified"] = (
                    allocation.get(sectors.get(ticker) or "Unclassified", 0.0) + value
                )
        if tracks_cash(entries):
            allocation["Cash"] = float(book.cash)
        total = sum(allocation.values())
        holding_returns = closes[held].pct_change().iloc[-lookback_days:] if held else None
        correlation = (
            holding_returns.corr().round(6).where(lambda c: c.notna(), None).to_dict()
            if holding_returns is not None and len(held) > 1
            else {}
        )
        return RiskOut(
            metrics=RiskMetrics.model_validate(risk_report(returns, bench)),
            correlation=correlation,
            allocation={k: v / total for k, v in allocation.items()} if total > 0 else {},
        )

    async def optimize(
        self, portfolio: PortfolioRow, method: str, lookback_days: int
    ) -> OptimizeOut:
        """Suggested weights over the current holdings (skfolio), fitted on their past returns."""
        from skfolio.optimization import HierarchicalRiskParity, MeanRisk, ObjectiveFunction

        today = (await self._clock.now()).today
        book = await self._ledger.book(portfolio, today)
        held = sorted(t for t, p in book.positions.items() if p.quantity > 0)
        if len(held) < 2:
            raise Unprocessable("too_few_holdings", "optimisation needs at least two holdings")
        end = await self._end(today)
        closes = await self.closes(held, end - timedelta(days=int(lookback_days * 1.6) + 10), end)
        returns = closes[held].pct_change().dropna().iloc[-lookback_days:]
        if len(returns) < 60:
            raise Unprocessable(
                "too_little_history",
                f"optimisation needs 60 common trading days; have {len(returns)}",
            )
        model = {
            "min_variance": lambda: MeanRisk(),
            "max_sharpe": lambda: MeanRisk(objective_function=ObjectiveFunction.MAXIMIZE_RATIO),
            "hrp": lambda: HierarchicalRiskParity(),
        }[method]()
        model.fit(returns)
        fitted = model.predict(returns)
        return OptimizeOut(
            method=method,
            weights={t: float(w) for t, w in zip(held, model.weights_, strict=True)},
            in_sample={
                "annualised_return": float(fitted.annualized_mean),
                "annualised_volatility": float(fitted.annualized_standard_deviation),
                "days": len(returns),
            },
            note=NOT_ADVICE,
        )
