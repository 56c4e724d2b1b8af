"""The canonical long OHLCV frame every part of the product speaks."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

PRICE_COLUMNS = ("open", "high", "low", "close")
OHLCV_COLUMNS = (*PRICE_COLUMNS, "volume")
BAR_COLUMNS = ("ticker", "date", *OHLCV_COLUMNS, "source")
TICKER_PATTERN = re.compile(r"^[A-Z0-9][A-Z0-9.\-]{0,14}$")


def normalise_ticker(raw: str) -> str:
    """Upper-case and validate a ticker symbol; raises ValueError with what is allowed."""
    ticker = raw.strip().upper()
    if not TICKER_PATTERN.match(ticker):
        raise ValueError(
            f"invalid ticker {raw!r}: use 1-15 characters A-Z, 0-9, '.' or '-', "
            "starting with a letter or digit"
        )
    return ticker


def canonical(frame: pd.DataFrame) -> pd.DataFrame:
    """Coerce a frame to the canonical columns and dtypes, sorted by (ticker, date).

    Missing optional columns (open/high/low/volume) become NaN; they are never filled in.
    """
    missing = {"ticker", "date", "close", "source"} - set(frame.columns)
    if missing:
        raise ValueError(f"bars frame lacks required columns: {sorted(missing)}")
    out = frame.reindex(columns=list(BAR_COLUMNS)).copy()
    out["ticker"] = out["ticker"].astype(str)
    out["date"] = pd.to_datetime(out["date"]).dt.tz_localize(None).dt.normalize()
    for column in OHLCV_COLUMNS:
        out[column] = pd.to_numeric(out[column], errors="raise").astype(np.float64)
    out["source"] = out["source"].astype(str)
    return out.sort_values(["ticker", "date"], kind="stable").reset_index(drop=True)


def ticker_frame(bars: pd.DataFrame, ticker: str) -> pd.DataFrame:
    """One ticker's bars as a date-indexed OHLCV frame (the shape indicators take)."""
    one = bars.loc[bars["ticker"] == ticker, ["date", *OHLCV_COLUMNS]]
    return one.set_index("date").sort_index()


def available_columns(frame: pd.DataFrame) -> frozenset[str]:
    """The OHLCV columns that hold at least one real value."""
    return frozenset(c for c in OHLCV_COLUMNS if c in frame and frame[c].notna().any())
