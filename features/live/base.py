"""What every live provider shares: the answer's shape, the errors, and symbol spelling.

A provider answers one question, a ticker's daily bars over [start, end], adjusted for every
split and dividend up to now, plus the corporate actions that went ex inside the window, so the
feed never cares which provider spoke. Errors say whether retrying can help (`UnknownSymbol`
cannot).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import pandas as pd

from features.bars import BAR_COLUMNS, canonical, normalise_ticker
from features.sessions import sessions_between

EXCHANGE_TZ = ZoneInfo("America/New_York")

# Our ticker -> the provider's symbol where the class-share rule below does not give it; None:
# the provider does not offer the instrument (Tiingo has no index data).
PROVIDER_SYMBOLS: dict[str, dict[str, str | None]] = {
    "SPX": {"yfinance": "^GSPC", "tiingo": None},
}
# Class shares: ours BRK.B is Yahoo's BRK-B and Tiingo's brk-b.
CLASS_SHARE_SPELLING: dict[str, Callable[[str], str]] = {
    "yfinance": lambda ticker: ticker.replace(".", "-"),
    "tiingo": lambda ticker: ticker.replace(".", "-").lower(),
}
UNOFFERED = {"tiingo": "Tiingo has no index data; yfinance serves the benchmark"}


class ProviderError(RuntimeError):
    """The provider could not deliver bars now (network, server error): worth retrying later."""


class RateLimited(ProviderError):
    """The provider asked us to slow down; `retry_after_s` is its hint, when it gave one."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UnknownSymbol(ProviderError):
    """The provider does not know or offer the symbol: retrying will not help."""


class MalformedAnswer(ProviderError):
    """The answer is not in the provider's documented format; never guess what it meant."""


@dataclass(frozen=True)
class CorporateAction:
    """A split and/or cash dividend going ex on one day, for OUR ticker."""

    ticker: str
    ex_date: date
    split: float = 1.0  # new shares per old share (3.0 for a 3-for-1)
    dividend: float = 0.0  # cash per share


@dataclass(frozen=True, eq=False)  # eq=False: a DataFrame has no truth value to compare by
class ProviderAnswer:
    """Adjusted canonical bars inside [start, end] and the actions that went ex there."""

    ticker: str
    bars: pd.DataFrame
    actions: tuple[CorporateAction, ...]


class LiveProvider(Protocol):
    """Daily bars for one ticker over [start, end], adjusted as of now, with corporate actions."""

    name: str

    def daily_bars(self, ticker: str, start: date, end: date) -> ProviderAnswer: ...


def provider_symbol(ticker: str, provider: str) -> str:
    """Our (normalised) ticker as `provider` spells it; UnknownSymbol where it is not offered."""
    special = PROVIDER_SYMBOLS.get(ticker, {})
    if provider not in special:
        return CLASS_SHARE_SPELLING[provider](ticker)
    symbol = special[provider]
    if symbol is None:
        raise UnknownSymbol(f"{ticker}: {UNOFFERED.get(provider, f'{provider} does not offer it')}")
    return symbol


def checked(ticker: str, start: date, end: date) -> str:
    symbol = normalise_ticker(ticker)
    if start > end:
        raise ValueError(f"start {start} is after end {end}")
    return symbol


def new_york_today() -> date:
    return datetime.now(EXCHANGE_TZ).date()


def bars_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return canonical(pd.DataFrame.from_records(rows, columns=list(BAR_COLUMNS)))


def answer_within(
    ticker: str, bars: pd.DataFrame, actions: list[CorporateAction], start: date, end: date
) -> ProviderAnswer:
    """Keep what lies inside [start, end]: providers pad windows (Yahoo's exclusive end)."""
    inside = (bars["date"] >= pd.Timestamp(start)) & (bars["date"] <= pd.Timestamp(end))
    within = sorted((a for a in actions if start <= a.ex_date <= end), key=lambda a: a.ex_date)
    return ProviderAnswer(ticker, bars[inside].reset_index(drop=True), tuple(within))


def trading_was_due(start: date, end: date, today: date) -> bool:
    """Whether [start, end] holds a finished session, so an empty answer means a missing symbol.
    Today's session does not count: before the open no provider has a bar for it."""
    return bool(sessions_between(start, min(end, today - timedelta(days=1))))
