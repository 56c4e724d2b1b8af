"""Live market-data providers behind one interface (`LiveProvider`): yfinance and Tiingo.

`base` holds what they share (the answer, the errors, symbol spelling), `yahoo` and `tiingo`
one provider each, and `make_provider` picks the configured one.
"""

from __future__ import annotations

from features.live.base import (
    CorporateAction,
    LiveProvider,
    MalformedAnswer,
    ProviderAnswer,
    ProviderError,
    RateLimited,
    UnknownSymbol,
    provider_symbol,
)
from features.live.tiingo import TiingoProvider, tiingo_daily, tiingo_partial_bar
from features.live.yahoo import (
    HistoryFetcher,
    YFinanceProvider,
    normalise_yfinance,
    yahoo_error,
    yahoo_history,
    yfinance_actions,
)

__all__ = [
    "CorporateAction",
    "HistoryFetcher",
    "LiveProvider",
    "MalformedAnswer",
    "ProviderAnswer",
    "ProviderError",
    "RateLimited",
    "TiingoProvider",
    "UnknownSymbol",
    "YFinanceProvider",
    "make_provider",
    "normalise_yfinance",
    "provider_symbol",
    "tiingo_daily",
    "tiingo_partial_bar",
    "yahoo_error",
    "yahoo_history",
    "yfinance_actions",
]


def make_provider(
    name: str, tiingo_api_key: str | None = None, tiingo_base_url: str = "https://api.tiingo.com"
) -> LiveProvider:
    """The configured live provider: "yfinance" (no key) or "tiingo" (needs TIINGO_API_KEY)."""
    if name == "yfinance":
        return YFinanceProvider()
    if name == "tiingo":
        if not tiingo_api_key:
            raise ValueError("the tiingo live provider needs an API key: set TIINGO_API_KEY")
        return TiingoProvider(tiingo_api_key, base_url=tiingo_base_url)
    raise ValueError(f"unknown live provider {name!r}: choose 'yfinance' or 'tiingo'")
