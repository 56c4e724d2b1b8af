"""/api/v1/market: index overview, movers, sector returns and sector correlation.

Market-wide answers are cached in Redis under the latest bar date (see api.services.market);
`stale` is added when they are sent, since it changes with the clock while the key does not.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from api.deps import ClockDep, PoolDep, RedisDep, require_scope
from api.errors import problems
from api.schemas import AsOf, Stale
from api.services.clock import ClockNow
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
    as_of: AsOf
    stale: Stale
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
    as_of: AsOf
    stale: Stale


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
    as_of: AsOf
    stale: Stale


class Correlation(BaseModel):
    lookback_days: int
    end: date
    sectors: list[str]
    matrix: list[list[float | None]]
    as_of: AsOf
    stale: Stale


def sent(answer: dict[str, Any], clock: ClockNow) -> dict[str, Any]:
    """A (cached) market answer with `stale` read off the request's clock."""
    return {**answer, "stale": clock.stale(date.fromisoformat(answer["as_of"]))}


@router.get("/overview", response_model=Overview, responses=problems(404))
async def overview(market: MarketDep, clock: ClockDep) -> Overview:
    """S&P 500 level and change, advancers and decliners on the latest day."""
    return Overview(**sent(await market.overview(), clock))


@router.get("/movers", response_model=Movers, response_model_by_alias=True, responses=problems(404))
async def movers(
    market: MarketDep,
    clock: ClockDep,
    period: Period = "1d",
    limit: Annotated[int, Query(ge=1, le=50)] = 5,
) -> Movers:
    """Top gainers and losers of the universe over the period."""
    return Movers(**sent(await market.movers(period, limit), clock))


@router.get(
    "/sectors", response_model=Sectors, response_model_by_alias=True, responses=problems(404)
)
async def sectors(market: MarketDep, clock: ClockDep, period: Period = "1m") -> Sectors:
    """Sector returns, relative strength against the S&P 500, and breadth."""
    return Sectors(**sent(await market.sectors(period), clock))


@router.get("/sectors/correlation", response_model=Correlation, responses=problems(404))
async def sector_correlation(
    market: MarketDep,
    clock: ClockDep,
    lookback_days: Annotated[int, Query(ge=20, le=2520)] = 252,
) -> Correlation:
    """Correlation matrix of equal-weighted sector daily returns."""
    return Correlation(**sent(await market.correlation(lookback_days), clock))
