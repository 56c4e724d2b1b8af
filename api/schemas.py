"""Response and request models (typed payloads everywhere; OpenAPI is generated from these)."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, Field


class StockHit(BaseModel):
    ticker: str
    name: str
    sector: str | None
    asset_type: str


class StockSearch(BaseModel):
    query: str
    results: list[StockHit]


class Bar(BaseModel):
    date: date
    open: float | None
    high: float | None
    low: float | None
    close: float
    volume: float | None


class History(BaseModel):
    ticker: str
    start: date
    end: date
    bars: list[Bar]


class IndicatorSeries(BaseModel):
    name: str
    category: str | None = Field(description="overlap, momentum, trend, volatility, volume, ...")
    outputs: dict[str, list[float | None]] | None = Field(
        description="Output name -> one value per entry of `dates` (null during warm-up)."
    )
    reason: str | None = Field(description="Why the indicator could not be computed, if it wasn't.")


class IndicatorResponse(BaseModel):
    ticker: str
    start: date
    end: date
    dates: list[date]
    indicators: list[IndicatorSeries]


class IndicatorInfo(BaseModel):
    name: str
    category: str
    parameters: list[str]
    defaults: list[float]
    example: str
    about: str


class PatternOut(BaseModel):
    date: date
    pattern: str
    direction: str
    strength: int


class PatternResponse(BaseModel):
    ticker: str
    start: date
    end: date
    patterns: list[PatternOut]
    reason: str | None


class ImportResult(BaseModel):
    ticker: str
    rows: int
    inserted: int
    updated: int


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    checks: dict[str, str]
