"""Yahoo Finance through yfinance: no key, the S&P 500 included (`^GSPC`); unofficial and
rate-limited without notice."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date, timedelta

import pandas as pd

from features.bars import canonical
from features.live.base import (
    CorporateAction,
    MalformedAnswer,
    ProviderAnswer,
    ProviderError,
    RateLimited,
    UnknownSymbol,
    answer_within,
    bars_frame,
    checked,
    new_york_today,
    provider_symbol,
    trading_was_due,
)

HistoryFetcher = Callable[[str, date, date], pd.DataFrame]


def yahoo_history(symbol: str, start: date, end: date) -> pd.DataFrame:
    """The one real call into yfinance: OHLCV adjusted as of now, with the action columns.

    yfinance's own logger is quietened: it logs every failure it then raises, and each reaches
    our callers as a ProviderError that they report once, in our format."""
    import yfinance as yf

    logging.getLogger("yfinance").setLevel(logging.CRITICAL)
    return yf.Ticker(symbol).history(
        start=start,
        end=end + timedelta(days=1),  # yfinance's end is exclusive
        interval="1d",
        auto_adjust=True,
        actions=True,
        raise_errors=True,
    )


def yahoo_error(exc: Exception, symbol: str) -> ProviderError:
    """yfinance's many exception types -> ours, by what the caller can do about them."""
    from yfinance import exceptions as yfe

    text = f"yfinance failed for {symbol}: {exc}"
    if isinstance(exc, yfe.YFRateLimitError):
        return RateLimited(text)
    # Yahoo's own words for a symbol it lacks; nothing broader ("host not found" is a network
    # error, and calling it an unknown symbol would stop the retries)
    symbol_gone = ("possibly delisted", "may be delisted", "Quote not found for symbol")
    if isinstance(exc, yfe.YFTickerMissingError) or any(s in str(exc) for s in symbol_gone):
        return UnknownSymbol(text)
    return ProviderError(text)


def _exchange_dates(index: pd.Index) -> pd.DatetimeIndex:
    # Daily bars are stamped at the exchange's midnight: keep the exchange-local calendar date
    return pd.DatetimeIndex(index).tz_localize(None).normalize()


def normalise_yfinance(raw: pd.DataFrame, ticker: str) -> pd.DataFrame:
    """yfinance `history()` frame (tz-aware index, Title-case columns) -> canonical bars.

    Rows Yahoo leaves incomplete (NaN close, a holiday stub) are dropped, never filled.
    """
    needed = {"Open", "High", "Low", "Close", "Volume"}
    if not needed <= set(raw.columns):
        raise MalformedAnswer(f"yfinance answer lacks columns {sorted(needed - set(raw.columns))}")
    frame = raw[sorted(needed)].rename(columns=str.lower)
    frame = frame.assign(date=_exchange_dates(raw.index), ticker=ticker, source="yfinance")
    return canonical(frame.dropna(subset=["close"]).reset_index(drop=True))


def yfinance_actions(raw: pd.DataFrame, ticker: str) -> list[CorporateAction]:
    """Actions from the `Dividends`/`Stock Splits` columns (0 on days without one), read from
    every row: an action is real even where Yahoo's price row is a stub."""
    needed = {"Dividends", "Stock Splits"}
    if not needed <= set(raw.columns):
        raise MalformedAnswer(f"yfinance answer lacks columns {sorted(needed - set(raw.columns))}")
    splits = raw["Stock Splits"].fillna(0.0).astype(float).to_numpy()
    dividends = raw["Dividends"].fillna(0.0).astype(float).to_numpy()
    days = _exchange_dates(raw.index).date
    return [
        CorporateAction(ticker, day, split=split if split > 0 else 1.0, dividend=dividend)
        for day, split, dividend in zip(days, splits, dividends, strict=True)
        if split not in (0.0, 1.0) or dividend != 0.0
    ]


class YFinanceProvider:
    """Yahoo Finance through yfinance. `fetch` is swappable so tests replay recorded answers."""

    name = "yfinance"

    def __init__(
        self, fetch: HistoryFetcher = yahoo_history, today: Callable[[], date] | None = None
    ) -> None:
        self._fetch = fetch
        self._today = today or new_york_today

    def daily_bars(self, ticker: str, start: date, end: date) -> ProviderAnswer:
        ours = checked(ticker, start, end)
        symbol = provider_symbol(ours, self.name)
        try:
            raw = self._fetch(symbol, start, end)
        except Exception as exc:  # yfinance raises many types; callers get ours
            if self._empty_window(exc, start, end):
                return answer_within(ours, bars_frame([]), [], start, end)
            raise yahoo_error(exc, symbol) from exc
        if raw is None or raw.empty:
            if trading_was_due(start, end, self._today()):
                raise UnknownSymbol(f"yfinance returned no bars for {symbol} in {start}..{end}")
            return answer_within(ours, bars_frame([]), [], start, end)
        return answer_within(
            ours, normalise_yfinance(raw, ours), yfinance_actions(raw, ours), start, end
        )

    def _empty_window(self, exc: Exception, start: date, end: date) -> bool:
        """yfinance says "no price data found" for a window without sessions (a weekend, a
        holiday); only a missing timezone (or no data where sessions were) is a missing symbol."""
        from yfinance import exceptions as yfe

        missing = isinstance(exc, yfe.YFPricesMissingError)
        return missing and not trading_was_due(start, end, self._today())
