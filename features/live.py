"""Live market-data providers behind one interface (the replay feed implements it too, later)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Protocol

import pandas as pd

from features.bars import canonical, normalise_ticker

HistoryFetcher = Callable[[str, date, date], pd.DataFrame]


class ProviderError(RuntimeError):
    """The provider could not deliver bars (network, unknown symbol, malformed answer)."""


class LiveProvider(Protocol):
    """Daily bars for one ticker over [start, end], as canonical rows."""

    name: str

    def daily_bars(self, ticker: str, start: date, end: date) -> pd.DataFrame: ...


def _yfinance_history(ticker: str, start: date, end: date) -> pd.DataFrame:
    import yfinance as yf

    # yfinance's `end` is exclusive; auto_adjust keeps OHLC consistent with the adjusted close
    end_exclusive = end + pd.Timedelta(days=1)
    return yf.Ticker(ticker).history(
        start=start,
        end=end_exclusive,
        interval="1d",
        auto_adjust=True,
        actions=False,
        raise_errors=True,
    )


def normalise_yfinance(raw: pd.DataFrame, ticker: str) -> pd.DataFrame:
    """yfinance `history()` frame (tz-aware index, Title-case columns) -> canonical bars.

    Rows Yahoo leaves incomplete (NaN close, a holiday stub) are dropped, never filled.
    """
    needed = {"Open", "High", "Low", "Close", "Volume"}
    if not needed <= set(raw.columns):
        raise ProviderError(f"yfinance answer lacks columns {sorted(needed - set(raw.columns))}")
    frame = raw[sorted(needed)].rename(columns=str.lower).dropna(subset=["close"])
    index = pd.DatetimeIndex(frame.index)
    # Daily bars are stamped at the exchange's midnight; keep the exchange-local calendar date
    dates = (
        index.tz_localize(None)
        if index.tz is None
        else index.tz_convert(index.tz).tz_localize(None)
    )
    frame = frame.assign(date=dates.normalize(), ticker=ticker, source="yfinance")
    return canonical(frame.reset_index(drop=True))


class YFinanceProvider:
    """Yahoo Finance through yfinance. `fetch` is swappable so tests replay recorded answers."""

    name = "yfinance"

    def __init__(self, fetch: HistoryFetcher = _yfinance_history) -> None:
        self._fetch = fetch

    def daily_bars(self, ticker: str, start: date, end: date) -> pd.DataFrame:
        symbol = normalise_ticker(ticker)
        if start > end:
            raise ValueError(f"start {start} is after end {end}")
        try:
            raw = self._fetch(symbol, start, end)
        except Exception as exc:  # yfinance raises many types; callers get one
            raise ProviderError(f"yfinance failed for {symbol}: {exc}") from exc
        if raw is None or raw.empty:
            raise ProviderError(f"yfinance returned no bars for {symbol} in {start}..{end}")
        bars = normalise_yfinance(raw, symbol)
        within = (bars["date"] >= pd.Timestamp(start)) & (bars["date"] <= pd.Timestamp(end))
        return bars[within].reset_index(drop=True)
