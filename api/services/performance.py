"""Portfolio performance and risk as pure functions over a ledger and daily closes.

- **Value history**: each trading day, holdings at that day's close plus cash.
- **External flows**: deposits (+) and withdrawals (−). A ledger without any deposit or
  withdrawal is a holdings-only record (cash not tracked): then buys count as money put in and
  sells and dividends as money taken out, and cash is left out of the value.
- **Time-weighted return**: daily `(V_t − F_t) / V_{t−1} − 1`, chained — flows land at the end
  of their day, so they never count as performance.
- **Money-weighted return**: XIRR (annualised) of the flows seen from the owner's side, with the
  starting value as money in and the ending value as money out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd
from scipy.optimize import brentq

from api.services.ledger import Book, Entry, apply, external_flow, ordered

TRADING_DAYS = 252


def tracks_cash(entries: Iterable[Entry]) -> bool:
    return any(e.type in ("deposit", "withdraw") for e in entries)


def _holdings_only_flow(entry: Entry) -> float:
    """Flows of a ledger that does not track cash: buys in, sells and dividends out."""
    if entry.type == "buy":
        return float(entry.quantity * entry.price + entry.fee)
    if entry.type == "sell":
        return -float(entry.quantity * entry.price - entry.fee)
    if entry.type == "dividend":
        return -float(entry.amount)
    return 0.0


def value_history(
    entries: list[Entry], closes: pd.DataFrame, days: pd.DatetimeIndex
) -> pd.DataFrame:
    """Per trading day: `value` (holdings at close, plus cash when tracked) and `flow`.

    `closes` is indexed by date with one column per ticker, forward-filled; a ticker without a
    close yet is valued at its cost until its first bar.
    """
    book = Book()
    with_cash = tracks_cash(entries)
    pending = ordered(entries)
    i = 0
    rows = []
    for day in days:
        flow = 0.0
        while i < len(pending) and pd.Timestamp(pending[i].date) <= day:
            entry = pending[i]
            apply(book, entry)
            flow += float(external_flow(entry)) if with_cash else _holdings_only_flow(entry)
            i += 1
        holdings = 0.0
        for ticker, position in book.positions.items():
            quantity = float(position.quantity)
            if not quantity:
                continue
            price = closes[ticker].get(day) if ticker in closes else None
            if price is None or not np.isfinite(price):
                holdings += float(position.cost_basis)
            else:
                holdings += quantity * float(price)
        value = holdings + (float(book.cash) if with_cash else 0.0)
        rows.append((day, value, flow))
    frame = pd.DataFrame(rows, columns=["date", "value", "flow"]).set_index("date")
    return frame


def daily_returns(history: pd.DataFrame) -> pd.Series:
    """Time-weighted daily returns; days whose previous value is not positive are skipped."""
    previous = history["value"].shift(1)
    valid = previous > 0
    returns = (history["value"] - history["flow"]) / previous - 1.0
    return returns[valid]


def twr(returns: pd.Series) -> float:
    return float(np.prod(1.0 + returns.to_numpy()) - 1.0) if len(returns) else 0.0


def xirr(flows: list[tuple[date, float]]) -> float | None:
    """Annual rate r with Σ amount_i / (1 + r)^(days_i / 365) = 0; owner's sign convention
    (money in negative). None when the flows do not change sign or no root exists."""
    if len(flows) < 2 or not (any(a < 0 for _, a in flows) and any(a > 0 for _, a in flows)):
        return None
    start = min(d for d, _ in flows)
    years = np.array([(d - start).days / 365.0 for d, _ in flows])
    amounts = np.array([a for _, a in flows])

    def npv(rate: float) -> float:
        return float(np.sum(amounts / (1.0 + rate) ** years))

    try:  # over decades the bracket's ends overflow to ±inf, which brentq handles
        with np.errstate(over="ignore", divide="ignore"):
            return float(brentq(npv, -0.9999, 1e4, maxiter=500))
    except ValueError:
        return None


@dataclass(frozen=True)
class PeriodReturn:
    period: str
    start: date
    end: date
    time_weighted: float
    money_weighted: float | None  # annualised
    benchmark: float | None
    excess: float | None


def period_start(period: str, end: date, first: date) -> date:
    return {
        "1D": end - timedelta(days=1),
        "1W": end - timedelta(days=7),
        "1M": (pd.Timestamp(end) - pd.DateOffset(months=1)).date(),
        "YTD": date(end.year, 1, 1) - timedelta(days=1),
        "1Y": (pd.Timestamp(end) - pd.DateOffset(years=1)).date(),
        "Max": first,
    }[period]


def period_return(period: str, history: pd.DataFrame, benchmark: pd.Series | None) -> PeriodReturn:
    """Returns over (base, end], where base is the last trading day on or before the period's
    start; "Max" runs from the first transaction (nothing held before it)."""
    end = history.index[-1]
    first = history.index[0]
    if period == "Max":
        base_day, window = first, history
        flows = [(d.date(), -float(f)) for d, f in history["flow"].items() if f]
    else:
        start = pd.Timestamp(period_start(period, end.date(), first.date()))
        base_day = history.index[history.index <= start][-1] if start >= first else first
        window = history.loc[base_day:]
        flows = [(base_day.date(), -float(window["value"].iloc[0]))]
        flows += [(d.date(), -float(f)) for d, f in window["flow"].iloc[1:].items() if f]
    flows.append((end.date(), float(window["value"].iloc[-1])))
    returns = daily_returns(window)
    bench = None
    if benchmark is not None:
        b = benchmark.loc[:end].dropna()
        b0 = b.loc[:base_day]
        if len(b0) and len(b):
            bench = float(b.iloc[-1] / b0.iloc[-1] - 1.0)
    tw = twr(returns)
    return PeriodReturn(
        period,
        base_day.date(),
        end.date(),
        tw,
        xirr(flows),
        bench,
        None if bench is None else tw - bench,
    )


@dataclass(frozen=True)
class RiskReport:
    days: int
    volatility: float
    beta: float | None
    sharpe: float | None
    sortino: float | None
    max_drawdown: float
    var_95: float
    cvar_95: float


def risk_report(returns: pd.Series, benchmark_returns: pd.Series | None) -> RiskReport:
    """Annualised volatility, beta, Sharpe and Sortino (risk-free 0), max drawdown, and daily
    historical VaR and CVaR at 95% (losses as positive fractions), via skfolio's measures."""
    from skfolio import measures

    r = returns.to_numpy(dtype=float)
    std = float(measures.standard_deviation(r))
    semi = float(measures.semi_deviation(r))
    mean = float(measures.mean(r))
    drawdowns = measures.get_drawdowns(r, compounded=True)
    beta = None
    if benchmark_returns is not None:
        joined = pd.concat([returns, benchmark_returns], axis=1, join="inner").dropna()
        if len(joined) > 2 and joined.iloc[:, 1].var() > 0:
            beta = float(joined.cov().iloc[0, 1] / joined.iloc[:, 1].var())
    scale = math.sqrt(TRADING_DAYS)
    return RiskReport(
        days=len(r),
        volatility=std * scale,
        beta=beta,
        sharpe=mean / std * scale if std > 0 else None,
        sortino=mean / semi * scale if semi > 0 else None,
        max_drawdown=float(measures.max_drawdown(drawdowns)),
        var_95=float(measures.value_at_risk(r, beta=0.95)),
        cvar_95=float(measures.cvar(r, beta=0.95)),
    )
