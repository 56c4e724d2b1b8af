"""/api/v1/stocks: search and price history."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Path, Query

from api.deps import MarketDataDep, scope_if_signed_in
from api.schemas import Bar, History, StockHit, StockSearch

router = APIRouter(
    prefix="/api/v1/stocks", tags=["stocks"], dependencies=[scope_if_signed_in("read:market")]
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


@router.get("/{ticker}/history", response_model=History)
async def stock_history(
    market: MarketDataDep,
    ticker: TickerPath,
    start: date | None = None,
    end: date | None = None,
) -> History:
    """Daily OHLCV bars (default: the last year of data). Close-only series have null OHLV."""
    window = await market.resolve_range(ticker, start, end)
    bars = await market.history(ticker.upper(), window)
    clean = bars.astype(object).where(bars.notna(), None)
    return History(
        ticker=ticker.upper(),
        start=window.start,
        end=window.end,
        bars=[
            Bar(date=d.date(), **row)
            for d, row in zip(clean.index, clean.to_dict("records"), strict=True)
        ],
    )
