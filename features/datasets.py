"""Loaders for the real market data bundled inside PyPI packages (no network at run time)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import pandas as pd

from features.bars import canonical

UNIVERSE_FILE = "universe.json"


@dataclass(frozen=True)
class Instrument:
    ticker: str
    name: str
    asset_type: str
    sector: str | None
    source: str
    ohlc_source: str | None = None


@dataclass(frozen=True)
class Universe:
    version: str
    instruments: tuple[Instrument, ...]

    def by_source(self, source: str) -> list[Instrument]:
        return [i for i in self.instruments if i.source == source]


def load_universe() -> Universe:
    """The versioned universe file shipped with the package."""
    text = resources.files("features").joinpath("data", UNIVERSE_FILE).read_text()
    raw = json.loads(text)
    return Universe(raw["version"], tuple(Instrument(**item) for item in raw["instruments"]))


def _long_close_only(wide: pd.DataFrame, source: str) -> pd.DataFrame:
    """Wide close prices (one column per ticker) -> long canonical rows with close only."""
    long = wide.rename_axis(index="date", columns="ticker").stack().rename("close").reset_index()
    long["source"] = source
    return long


def _skfolio_sp500(tickers: list[str]) -> pd.DataFrame:
    from skfolio.datasets import load_sp500_dataset

    return _long_close_only(load_sp500_dataset()[tickers], "skfolio.sp500")


def _skfolio_sp500_index(tickers: list[str]) -> pd.DataFrame:
    from skfolio.datasets import load_sp500_index

    (ticker,) = tickers
    return _long_close_only(load_sp500_index().set_axis([ticker], axis=1), "skfolio.sp500_index")


def _skfolio_factors(tickers: list[str]) -> pd.DataFrame:
    from skfolio.datasets import load_factors_dataset

    return _long_close_only(load_factors_dataset()[tickers], "skfolio.factors")


def _backtesting_goog(tickers: list[str]) -> pd.DataFrame:
    from backtesting.test import GOOG

    (ticker,) = tickers
    frame = GOOG.rename(columns=str.lower).rename_axis("date").reset_index()
    return frame.assign(ticker=ticker, source="backtesting.goog")


def pmdarima_msft_ohlcv() -> pd.DataFrame:
    """MSFT daily OHLCV 1986-2017 from pmdarima, date-indexed, lower-case columns."""
    from pmdarima.datasets import load_msft

    raw = load_msft()
    frame = raw.set_index(pd.to_datetime(raw["Date"]).rename("date"))
    return frame[["Open", "High", "Low", "Close", "Volume"]].rename(columns=str.lower)


def arch_sp500_ohlcv() -> pd.DataFrame:
    """S&P 500 index daily OHLCV 1999-2018 from arch, date-indexed, lower-case columns."""
    from arch.data import sp500  # arch.data.nasdaq is reserved as untouched out-of-sample data

    raw = sp500.load().rename_axis("date")
    return raw[["Open", "High", "Low", "Close", "Volume"]].rename(columns=str.lower)


def enrich_with_ohlc(close_only: pd.DataFrame, ohlcv: pd.DataFrame, source: str) -> pd.DataFrame:
    """Add open/high/low/volume from a second real source, scaled to the adjusted close.

    The adjusted close stays exactly as published; open, high and low are multiplied by that
    day's adjustment ratio (adjusted close / raw close), the standard way adjusted OHLC is made,
    so the bar stays self-consistent. Days the second source lacks stay close-only.
    """
    merged = close_only.set_index("date").join(ohlcv.add_prefix("raw_"), how="left")
    ratio = merged["close"] / merged["raw_close"]
    for column in ("open", "high", "low"):
        merged[column] = merged[f"raw_{column}"] * ratio
    merged["volume"] = merged["raw_volume"]
    has_ohlc = merged["raw_close"].notna()
    merged.loc[has_ohlc, "source"] = merged.loc[has_ohlc, "source"] + "+" + source
    return merged.drop(columns=[c for c in merged if c.startswith("raw_")]).reset_index()


_LOADERS: dict[str, Callable[[list[str]], pd.DataFrame]] = {
    "skfolio.sp500": _skfolio_sp500,
    "skfolio.sp500_index": _skfolio_sp500_index,
    "skfolio.factors": _skfolio_factors,
    "backtesting.goog": _backtesting_goog,
}
_OHLC_LOADERS: dict[str, Callable[[], pd.DataFrame]] = {
    "pmdarima.msft": pmdarima_msft_ohlcv,
    "arch.sp500": arch_sp500_ohlcv,
}


def load_bundled_bars(universe: Universe | None = None) -> pd.DataFrame:
    """Every instrument of the universe as one canonical long OHLCV frame."""
    universe = universe or load_universe()
    parts: list[pd.DataFrame] = []
    for source, loader in _LOADERS.items():
        tickers = [i.ticker for i in universe.by_source(source)]
        if tickers:
            parts.append(loader(tickers))
    bars = pd.concat(parts, ignore_index=True)
    for instrument in universe.instruments:
        if instrument.ohlc_source is None:
            continue
        mask = bars["ticker"] == instrument.ticker
        enriched = enrich_with_ohlc(
            bars[mask], _OHLC_LOADERS[instrument.ohlc_source](), instrument.ohlc_source
        )
        bars = pd.concat([bars[~mask], enriched], ignore_index=True)
    return canonical(bars.dropna(subset=["close"]))
