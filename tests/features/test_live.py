"""The yfinance provider, driven by a stored `history()` answer (no network in tests)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from features.live import ProviderError, YFinanceProvider

FIXTURE = Path(__file__).parent.parent / "fixtures" / "yfinance_goog_history.csv"


def _recorded(ticker: str, start: date, end: date) -> pd.DataFrame:
    """Replay a stored answer in yfinance's exact shape (see tests/fixtures/README.md)."""
    frame = pd.read_csv(FIXTURE, index_col="Date")
    frame.index = pd.to_datetime(frame.index, utc=True).tz_convert("America/New_York")
    return frame


def test_yfinance_answer_becomes_canonical_bars() -> None:
    bars = YFinanceProvider(_recorded).daily_bars("goog", date(2013, 2, 20), date(2013, 2, 26))
    assert bars["ticker"].unique().tolist() == ["GOOG"]
    assert bars["source"].unique().tolist() == ["yfinance"]
    assert [d.date() for d in bars["date"]] == [
        date(2013, 2, 20),
        date(2013, 2, 21),
        date(2013, 2, 22),
        date(2013, 2, 25),
        date(2013, 2, 26),
    ]
    assert bars["date"].dt.tz is None
    assert (bars["high"] >= bars["low"]).all()
    assert bars.loc[0, "close"] == pytest.approx(792.46)


def test_incomplete_rows_are_dropped_not_filled() -> None:
    bars = YFinanceProvider(_recorded).daily_bars("GOOG", date(2013, 2, 1), date(2013, 3, 1))
    raw = _recorded("GOOG", date(2013, 2, 1), date(2013, 3, 1))
    assert len(bars) == raw["Close"].notna().sum()


def test_provider_failures_surface_as_provider_errors() -> None:
    def broken(ticker: str, start: date, end: date) -> pd.DataFrame:
        raise ConnectionError("network unreachable")

    with pytest.raises(ProviderError, match="network unreachable"):
        YFinanceProvider(broken).daily_bars("GOOG", date(2013, 1, 1), date(2013, 2, 1))
    with pytest.raises(ProviderError, match="no bars"):
        YFinanceProvider(lambda *_: pd.DataFrame()).daily_bars(
            "GOOG", date(2013, 1, 1), date(2013, 2, 1)
        )
    with pytest.raises(ValueError, match="invalid ticker"):
        YFinanceProvider(_recorded).daily_bars("bad ticker!", date(2013, 1, 1), date(2013, 2, 1))
