"""/api/v1/stocks: search and price history."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

import pandas as pd
from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from api.deps import ClockDep, MarketDataDep, require_scope
from api.schemas import Bar, Day, History, Quote, Stale, StockHit, StockSearch

router = APIRouter(
    prefix="/api/v1/stocks", tags=["stocks"], dependencies=[require_scope("read:market")]
)
TickerPath = Annotated[str, Path(min_length=1, max_length=15, examples=["AAPL"])]


@router.get("", response_model=StockSearch)
async def search_stocks(
    market: MarketDataDep,
    q: Annotated[str, Query(min_length=1, max_length=64, description="ticker or name")],
    limit: Annotated[int, Query(ge=1, le=50)] = 20,
) -> StockSearch:
    """Search instruments by ticker prefix or name."""
    rows = await market.search(q, limit)
    return StockSearch(query=q, results=[StockHit(**dict(r)) for r in rows])


class StockInfo(BaseModel):
    ticker: str
    name: str
    sector: str | None
    asset_type: str
    first_date: date | None
    last_date: date | None
    bars: int
    as_of: date | None = Field(description="the newest bar (`last_date`); null when none")
    stale: Stale


@router.get("/{ticker}", response_model=StockInfo)
async def stock(market: MarketDataDep, clock: ClockDep, ticker: TickerPath) -> StockInfo:
    """Name, sector, asset type and the span of stored bars."""
    row = await market.instrument(ticker)
    last = row["last_date"]
    return StockInfo(**dict(row), as_of=last, stale=clock.stale(last))  # `source` is left out


@router.get("/{ticker}/quote", response_model=Quote)
async def quote(market: MarketDataDep, clock: ClockDep, ticker: TickerPath) -> Quote:
    """The latest bar, its change on the previous close, and the 52-week range."""
    return await market.quote(ticker, clock)


_RESAMPLE = {"1wk": "W-FRI", "1mo": "ME"}


def resample(bars: pd.DataFrame, interval: str) -> pd.DataFrame:
    """Weekly (to Friday) or monthly OHLCV: first open, highest high, lowest low, last close,
    summed volume; each bucket is dated by its last actual trading day."""
    if interval == "1d":
        return bars
    grouped = bars.groupby(pd.Grouper(freq=_RESAMPLE[interval]))
    out = pd.DataFrame(
        {
            "open": grouped["open"].first(),
            "high": grouped["high"].max(),
            "low": grouped["low"].min(),
            "close": grouped["close"].last(),
            "volume": grouped["volume"].sum(min_count=1),
            "last_day": grouped["close"].apply(lambda c: c.index.max()),
        }
    ).dropna(subset=["close"])
    return out.set_index("last_day").rename_axis("date")


@router.get("/{ticker}/history", response_model=History)
async def stock_history(
    market: MarketDataDep,
    clock: ClockDep,
    ticker: TickerPath,
    start: Day | None = None,
    end: Day | None = None,
    interval: Literal["1d", "1wk", "1mo"] = "1d",
) -> History:
    """OHLCV bars, daily or resampled to weeks or months (default: the last year of data;
    a range ends at the newest bar at most). Close-only series have null OHLV."""
    window = await market.resolve_range(ticker, start, end)
    bars = resample(await market.history(ticker.upper(), window), interval)
    clean = bars.astype(object).where(bars.notna(), None)
    as_of = bars.index[-1].date() if len(bars) else None
    return History(
        ticker=ticker.upper(),
        start=window.start,
        end=window.end,
        bars=[
            Bar(date=d.date(), **row)
            for d, row in zip(clean.index, clean.to_dict("records"), strict=True)
        ],
        as_of=as_of,
        stale=clock.stale(as_of),
    )
