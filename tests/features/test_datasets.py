"""The bundled real datasets as one canonical frame, with a versioned universe."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.bars import BAR_COLUMNS, ticker_frame
from features.datasets import load_universe


def test_universe_is_versioned_with_gics_sectors() -> None:
    universe = load_universe()
    assert universe.version
    by_ticker = {i.ticker: i for i in universe.instruments}
    assert by_ticker["AAPL"].sector == "Information Technology"
    assert by_ticker["JPM"].sector == "Financials"
    assert by_ticker["SPX"].asset_type == "index" and by_ticker["SPX"].sector is None
    assert len(by_ticker) == len(universe.instruments) == 27


def test_bundled_bars_are_canonical_and_cover_every_instrument(bundled_bars: pd.DataFrame) -> None:
    assert tuple(bundled_bars.columns) == BAR_COLUMNS
    assert set(bundled_bars["ticker"]) == {i.ticker for i in load_universe().instruments}
    assert not bundled_bars.duplicated(["ticker", "date"]).any()
    assert (bundled_bars["close"] > 0).all()
    spans = bundled_bars.groupby("ticker")["date"].agg(["min", "max"])
    assert spans.loc["AAPL", "min"] == pd.Timestamp("1990-01-02")
    assert spans.loc["AAPL", "max"] == pd.Timestamp("2022-12-28")
    assert spans.loc["GOOG", "min"] == pd.Timestamp("2004-08-19")


def test_close_only_series_never_get_invented_ohlv(bundled_bars: pd.DataFrame) -> None:
    for ticker in ("AAPL", "SPX", "MTUM"):
        frame = ticker_frame(bundled_bars, ticker)
        assert frame[["open", "high", "low", "volume"]].isna().all().all(), ticker


def test_msft_ohlc_is_scaled_to_the_adjusted_close_and_consistent(
    bundled_bars: pd.DataFrame,
) -> None:
    msft = ticker_frame(bundled_bars, "MSFT")
    with_ohlc = msft.dropna(subset=["open"])
    assert with_ohlc.index.max() == pd.Timestamp("2017-11-10")  # pmdarima's span ends here
    assert msft.loc["2018":, "open"].isna().all()  # later bars stay close-only
    assert (with_ohlc["high"] >= with_ohlc[["open", "close"]].max(axis=1) - 1e-9).all()
    assert (with_ohlc["low"] <= with_ohlc[["open", "close"]].min(axis=1) + 1e-9).all()
    # the close is skfolio's adjusted close exactly; the OHLC range scales with it
    from skfolio.datasets import load_sp500_dataset

    np.testing.assert_allclose(msft["close"].to_numpy(), load_sp500_dataset()["MSFT"].to_numpy())
