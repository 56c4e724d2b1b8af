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
    for ticker in ("AAPL", "MTUM"):
        frame = ticker_frame(bundled_bars, ticker)
        assert frame[["open", "high", "low", "volume"]].isna().all().all(), ticker
    spx = ticker_frame(bundled_bars, "SPX")
    outside_arch = pd.concat([spx.loc[:"1998"], spx.loc["2019":]])
    assert len(outside_arch) > 1_000
    assert outside_arch[["open", "high", "low", "volume"]].isna().all().all()


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


def test_spx_gets_arch_ohlcv_on_the_days_arch_covers(bundled_bars: pd.DataFrame) -> None:
    spx = ticker_frame(bundled_bars, "SPX")
    day = spx.loc["2005-03-01"]
    assert day[["open", "high", "low", "volume"]].notna().all()
    assert day["low"] <= min(day["open"], day["close"]) <= max(day["open"], day["close"])
    assert max(day["open"], day["close"]) <= day["high"]
    with_ohlc = spx.dropna(subset=["open"])
    assert with_ohlc.index.min() == pd.Timestamp("1999-01-04")  # arch's span
    assert with_ohlc.index.max() == pd.Timestamp("2018-12-31")
    assert spx.loc["2019":, ["open", "high", "low"]].isna().all().all()
    assert (with_ohlc["high"] >= with_ohlc[["open", "close"]].max(axis=1) - 1e-9).all()
    assert (with_ohlc["low"] <= with_ohlc[["open", "close"]].min(axis=1) + 1e-9).all()
    # the close stays skfolio's; arch's bars are the same index, so no rescaling shows
    from arch.data import sp500
    from skfolio.datasets import load_sp500_index

    np.testing.assert_allclose(spx["close"].to_numpy(), load_sp500_index()["SP500"].to_numpy())
    raw = sp500.load().loc[with_ohlc.index]
    np.testing.assert_allclose(with_ohlc["high"].to_numpy(), raw["High"].to_numpy(), rtol=1e-6)
    assert set(spx.loc["2005", :].index) <= set(with_ohlc.index)


def test_the_nasdaq_holdout_never_enters_the_universe(bundled_bars: pd.DataFrame) -> None:
    universe = load_universe()
    sources = {i.source for i in universe.instruments} | {
        i.ohlc_source for i in universe.instruments if i.ohlc_source
    }
    assert not any("nasdaq" in s for s in sources)
    assert not bundled_bars["source"].str.contains("nasdaq", case=False).any()
    assert not {"NDX", "IXIC", "COMP", "NASDAQ"} & set(bundled_bars["ticker"])
