"""/api/v1/market: index overview, movers, sector returns and sector correlation.

Market-wide answers are cached in Redis under the latest bar date (see api.services.market).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from api.deps import PoolDep, RedisDep, require_scope
from api.errors import problems
from api.services.market import MarketService

router = APIRouter(
    prefix="/api/v1/market", tags=["market"], dependencies=[require_scope("read:market")]
)
Period = Literal["1d", "1w", "1m", "ytd", "1y"]


async def get_market(pool: PoolDep, redis: RedisDep) -> MarketService:
    return MarketService.cached_in(pool, redis)


MarketDep = Annotated[MarketService, Depends(get_market)]


class IndexLevel(BaseModel):
    ticker: str
    level: float
    change: float
    change_pct: float


class Overview(BaseModel):
    as_of: date
    index: IndexLevel
    advancers: int
    decliners: int
    unchanged: int


class Mover(BaseModel):
    ticker: str
    sector: str | None
    return_: float = Field(alias="return")


class Movers(BaseModel):
    period: str
    start: date
    end: date
    gainers: list[Mover]
    losers: list[Mover]


class SectorRow(BaseModel):
    sector: str
    members: int
    return_: float = Field(alias="return", description="equal-weighted mean of members")
    relative_strength: float | None = Field(description="(1 + sector) / (1 + S&P 500) − 1")
    breadth: float = Field(description="share of members with a positive return")


class Sectors(BaseModel):
    period: str
    start: date
    end: date
    benchmark_return: float | None
    sectors: list[SectorRow]


class Correlation(BaseModel):
    lookback_days: int
    end: date
    sectors: list[str]
    matrix: list[list[float | None]]


@router.get("/overview", response_model=Overview, responses=problems(404))
async def overview(market: MarketDep) -> Overview:
    """S&P 500 level and change, advancers and decliners on the latest day."""
    return Overview(**await market.overview())


@router.get("/movers", response_model=Movers, response_model_by_alias=True, responses=problems(404))
async def movers(
    market: MarketDep,
    period: Period = "1d",
    limit: Annotated[int, Query(ge=1, le=50)] = 5,
) -> Movers:
    """Top gainers and losers of the universe over the period."""
    return Movers(**await market.movers(period, limit))


@router.get(
    "/sectors", response_model=Sectors, response_model_by_alias=True, responses=problems(404)
)
async def sectors(market: MarketDep, period: Period = "1m") -> Sectors:
    """Sector returns, relative strength against the S&P 500, and breadth."""
    return Sectors(**await market.sectors(period))


@router.get("/sectors/correlation", response_model=Correlation, responses=problems(404))
async def sector_correlation(
    market: MarketDep, lookback_days: Annotated[int, Query(ge=20, le=2520)] = 252
) -> Correlation:
    """Correlation matrix of equal-weighted sector daily returns."""
    return Correlation(**await market.correlation(lookback_days))
