"""The yfinance provider, driven by stored `history()` answers (no network on the build machines).

yfinance binds Yahoo's URLs at import and keeps a process-wide session, cookie/crumb flow and
caches, so it cannot be pointed at a loopback server cleanly; these tests replay frames in the
exact shape `Ticker.history()` returns, through the provider's `fetch` seam, and raise yfinance's
own exception types where the SDK would (see tests/fixtures/README.md).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from yfinance.exceptions import YFPricesMissingError, YFRateLimitError, YFTzMissingError

from features.bars import BAR_COLUMNS
from features.live import (
    CorporateAction,
    MalformedAnswer,
    ProviderError,
    RateLimited,
    TiingoProvider,
    UnknownSymbol,
    YFinanceProvider,
    make_provider,
)

FIXTURES = Path(__file__).parent.parent / "fixtures"


def _later() -> date:
    """'Today' for answers recorded after their window (no partial bar in them)."""
    return date(2025, 3, 3)


# Yahoo's unadjusted KO closes for the dividend window (its auto_adjust=False answer)
KO_RAW_CLOSE = {date(2024, 6, 13): 63.05, date(2024, 6, 14): 62.80}


def _monday() -> date:
    """'Today' for the answer recorded mid-session on Monday 2024-07-08."""
    return date(2024, 7, 8)


def _frame(name: str) -> pd.DataFrame:
    frame = pd.read_csv(FIXTURES / name, index_col="Date")
    frame.index = pd.to_datetime(frame.index, utc=True).tz_convert("America/New_York")
    return frame


def _replaying(name: str, asked: list[str] | None = None) -> Callable[..., pd.DataFrame]:
    """A fetch that replays a stored answer and notes which provider symbol it was asked for."""

    def fetch(symbol: str, start: date, end: date) -> pd.DataFrame:
        if asked is not None:
            asked.append(symbol)
        return _frame(name)

    return fetch


def _raising(exc: Exception) -> Callable[..., pd.DataFrame]:
    def fetch(symbol: str, start: date, end: date) -> pd.DataFrame:
        raise exc

    return fetch


def _days(bars: pd.DataFrame) -> list[date]:
    return [d.date() for d in bars["date"]]


def _recorded(ticker: str, start: date, end: date) -> pd.DataFrame:
    return _frame("yfinance_goog_history.csv")


def test_yfinance_answer_becomes_canonical_bars() -> None:
    answer = YFinanceProvider(_recorded).daily_bars("goog", date(2013, 2, 20), date(2013, 2, 26))
    bars = answer.bars
    assert answer.ticker == "GOOG"
    assert bars["ticker"].unique().tolist() == ["GOOG"]
    assert bars["source"].unique().tolist() == ["yfinance"]
    assert _days(bars) == [
        date(2013, 2, 20),
        date(2013, 2, 21),
        date(2013, 2, 22),
        date(2013, 2, 25),
        date(2013, 2, 26),
    ]
    assert bars["date"].dt.tz is None
    assert (bars["high"] >= bars["low"]).all()
    assert bars.loc[0, "close"] == pytest.approx(792.46)
    assert answer.actions == ()


def test_incomplete_rows_are_dropped_not_filled() -> None:
    bars = YFinanceProvider(_recorded).daily_bars("GOOG", date(2013, 2, 1), date(2013, 3, 1)).bars
    raw = _frame("yfinance_goog_history.csv")
    assert len(bars) == raw["Close"].notna().sum()


def test_provider_failures_surface_as_provider_errors() -> None:
    with pytest.raises(ProviderError, match="network unreachable") as caught:
        YFinanceProvider(_raising(ConnectionError("network unreachable"))).daily_bars(
            "GOOG", date(2013, 1, 1), date(2013, 2, 1)
        )
    assert type(caught.value) is ProviderError  # retryable, not a verdict on the symbol
    with pytest.raises(ProviderError) as caught:
        YFinanceProvider(_raising(OSError("Could not resolve host: host not found"))).daily_bars(
            "GOOG", date(2013, 1, 1), date(2013, 2, 1)
        )
    assert type(caught.value) is ProviderError
    with pytest.raises(ProviderError, match="no bars"):
        YFinanceProvider(lambda *_: pd.DataFrame(), today=_later).daily_bars(
            "GOOG", date(2013, 1, 1), date(2013, 2, 1)
        )
    with pytest.raises(ValueError, match="invalid ticker"):
        YFinanceProvider(_recorded).daily_bars("bad ticker!", date(2013, 1, 1), date(2013, 2, 1))
    with pytest.raises(ValueError, match="after end"):
        YFinanceProvider(_recorded).daily_bars("GOOG", date(2013, 2, 2), date(2013, 2, 1))


def test_a_split_inside_the_window_leaves_no_jump_and_is_reported() -> None:
    provider = YFinanceProvider(_replaying("yfinance_wmt_history.csv"), today=_later)
    answer = provider.daily_bars("WMT", date(2024, 2, 15), date(2024, 2, 29))
    closes = answer.bars.set_index("date")["close"]
    before, after = closes[pd.Timestamp(2024, 2, 23)], closes[pd.Timestamp(2024, 2, 26)]
    assert after / before == pytest.approx(58.79 / (175.56 / 3), rel=1e-4)  # no 3x drop
    assert np.abs(np.diff(np.log(closes.to_numpy()))).max() < 0.05
    assert date(2024, 2, 19) not in _days(answer.bars)  # Presidents' Day
    assert answer.actions == (CorporateAction("WMT", date(2024, 2, 26), split=3.0),)


def test_a_dividend_is_reported_and_earlier_closes_are_adjusted_down_by_its_factor() -> None:
    provider = YFinanceProvider(_replaying("yfinance_ko_history.csv"), today=_later)
    answer = provider.daily_bars("KO", date(2024, 6, 10), date(2024, 6, 21))
    assert answer.actions == (CorporateAction("KO", date(2024, 6, 14), dividend=0.485),)
    closes = answer.bars.set_index("date")["close"]
    ratio_before = closes[pd.Timestamp(2024, 6, 13)] / KO_RAW_CLOSE[date(2024, 6, 13)]
    ratio_after = closes[pd.Timestamp(2024, 6, 14)] / KO_RAW_CLOSE[date(2024, 6, 14)]
    assert ratio_before < ratio_after
    assert ratio_before / ratio_after == pytest.approx(1 - 0.485 / 63.05, rel=1e-5)
    assert date(2024, 6, 19) not in _days(answer.bars)  # Juneteenth


def test_actions_outside_the_window_are_left_out() -> None:
    provider = YFinanceProvider(_replaying("yfinance_wmt_history.csv"), today=_later)
    answer = provider.daily_bars("WMT", date(2024, 2, 27), date(2024, 2, 29))
    assert _days(answer.bars) == [date(2024, 2, 27), date(2024, 2, 28), date(2024, 2, 29)]
    assert answer.actions == ()


def test_todays_partial_bar_is_kept_with_the_prices_yahoo_gave() -> None:
    provider = YFinanceProvider(_replaying("yfinance_msft_history.csv"), today=_monday)
    bars = provider.daily_bars("MSFT", date(2024, 7, 1), date(2024, 7, 8)).bars
    today = bars.iloc[-1]
    assert today["date"].date() == date(2024, 7, 8)
    assert [today[c] for c in ("open", "high", "low", "close", "volume")] == pytest.approx(
        [466.55, 467.70, 464.46, 465.10, 6_420_000]
    )


def test_the_holiday_stub_row_is_dropped() -> None:
    provider = YFinanceProvider(_replaying("yfinance_msft_history.csv"), today=_monday)
    bars = provider.daily_bars("MSFT", date(2024, 7, 1), date(2024, 7, 5)).bars
    assert _days(bars) == [date(2024, 7, 1), date(2024, 7, 2), date(2024, 7, 3), date(2024, 7, 5)]
    assert bars["close"].notna().all()


@pytest.mark.parametrize(
    ("start", "end"),
    [(date(2024, 7, 4), date(2024, 7, 4)), (date(2024, 7, 6), date(2024, 7, 7))],
    ids=["independence-day", "weekend"],
)
def test_a_window_without_sessions_is_an_empty_answer_not_an_error(start: date, end: date) -> None:
    # what yfinance raises for such a window with raise_errors=True
    missing = YFPricesMissingError("MSFT", f"(1d {start} -> {end})")
    for fetch in (_raising(missing), lambda *_: pd.DataFrame()):
        answer = YFinanceProvider(fetch, today=_later).daily_bars("MSFT", start, end)
        assert answer.bars.empty
        assert list(answer.bars.columns) == list(BAR_COLUMNS)
        assert answer.actions == ()


def test_before_todays_open_an_empty_answer_is_not_an_error() -> None:
    missing = YFPricesMissingError("MSFT", "(1d 2024-07-08 -> 2024-07-09)")
    provider = YFinanceProvider(_raising(missing), today=_monday)
    assert provider.daily_bars("MSFT", date(2024, 7, 8), date(2024, 7, 8)).bars.empty


@pytest.mark.parametrize(
    "error",
    [
        YFTzMissingError("ZZZZ"),
        YFPricesMissingError("ZZZZ", "", yahoo_reason="No data found, symbol may be delisted"),
        YFPricesMissingError("ZZZZ", "(1d 2024-07-01 -> 2024-07-06)"),
    ],
    ids=["no-timezone", "yahoo-says-delisted", "no-prices-where-sessions-were"],
)
def test_an_unknown_symbol_is_an_unknown_symbol(error: Exception) -> None:
    provider = YFinanceProvider(_raising(error), today=_later)
    with pytest.raises(UnknownSymbol, match="ZZZZ"):
        provider.daily_bars("ZZZZ", date(2024, 7, 1), date(2024, 7, 5))


def test_yahoo_rate_limiting_is_rate_limited() -> None:
    with pytest.raises(RateLimited, match="Too Many Requests") as caught:
        YFinanceProvider(_raising(YFRateLimitError())).daily_bars(
            "MSFT", date(2024, 7, 1), date(2024, 7, 5)
        )
    assert caught.value.retry_after_s is None  # yfinance does not pass Retry-After on


@pytest.mark.parametrize("missing", ["Close", "Stock Splits"])
def test_an_answer_without_its_columns_is_malformed(missing: str) -> None:
    def fetch(symbol: str, start: date, end: date) -> pd.DataFrame:
        return _frame("yfinance_msft_history.csv").drop(columns=[missing])

    with pytest.raises(MalformedAnswer, match=missing):
        YFinanceProvider(fetch).daily_bars("MSFT", date(2024, 7, 1), date(2024, 7, 5))


@pytest.mark.parametrize(("ours", "yahoos"), [("SPX", "^GSPC"), ("brk.b", "BRK-B")])
def test_our_tickers_are_asked_in_yahoos_spelling_and_answered_in_ours(
    ours: str, yahoos: str
) -> None:
    asked: list[str] = []
    provider = YFinanceProvider(_replaying("yfinance_msft_history.csv", asked))
    answer = provider.daily_bars(ours, date(2024, 7, 1), date(2024, 7, 5))
    assert asked == [yahoos]
    assert answer.ticker == ours.upper()
    assert answer.bars["ticker"].unique().tolist() == [ours.upper()]


def test_make_provider_names_the_missing_key() -> None:
    assert isinstance(make_provider("yfinance"), YFinanceProvider)
    assert isinstance(make_provider("tiingo", tiingo_api_key="k"), TiingoProvider)
    for key in (None, ""):
        with pytest.raises(ValueError, match="TIINGO_API_KEY"):
            make_provider("tiingo", tiingo_api_key=key)
    with pytest.raises(ValueError, match="yfinance"):
        make_provider("bloomberg")
