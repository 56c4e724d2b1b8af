"""/api/v1/analysis: technical indicators and candlestick patterns."""

from __future__ import annotations

import math
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.deps import ClockDep, MarketDataDep, PoolDep, require_scope
from api.errors import Unprocessable, problems
from api.routers.stocks import TickerPath
from api.schemas import (
    AsOf,
    Day,
    IndicatorInfo,
    IndicatorResponse,
    IndicatorSeries,
    PatternOut,
    PatternResponse,
    Stale,
)
from api.services.market_data import DateRange
from api.services.similarity import SimilarityService
from features import indicators, patterns, signals

router = APIRouter(
    prefix="/api/v1/analysis", tags=["analysis"], dependencies=[require_scope("read:market")]
)
MAX_INDICATORS = 20


def _split_names(raw: str, what: str) -> list[str]:
    names = [n.strip() for n in raw.split(",") if n.strip()]
    if len(names) > MAX_INDICATORS:
        raise Unprocessable("too_many", f"at most {MAX_INDICATORS} {what} per request")
    return list(dict.fromkeys(names))


def _clean(values: list[float]) -> list[float | None]:
    return [None if v is None or not math.isfinite(v) else float(v) for v in values]


@router.get("/indicators", response_model=list[IndicatorInfo])
async def list_indicators() -> list[IndicatorInfo]:
    """The curated indicator catalogue; any other pandas-ta indicator also works by name."""
    return [
        IndicatorInfo(
            name=name,
            category=c.category,
            parameters=list(c.params),
            defaults=list(c.defaults),
            about=c.about,
            example="_".join([name, *(f"{d:g}" for d in c.defaults)]),
        )
        for name, c in indicators.CATALOGUE.items()
    ]


@router.get("/patterns", response_model=list[str])
async def list_patterns() -> list[str]:
    """Names of every candlestick pattern (TA-Lib CDL functions)."""
    return sorted(patterns.pattern_functions())


@router.get("/{ticker}/indicators", response_model=IndicatorResponse)
async def ticker_indicators(
    market: MarketDataDep,
    clock: ClockDep,
    ticker: TickerPath,
    names: Annotated[str, Query(min_length=1, max_length=500, examples=["rsi_14,macd_12_26_9"])],
    start: Day | None = None,
    end: Day | None = None,
) -> IndicatorResponse:
    """Indicator values per bar, warmed up on earlier history (values at t use bars ≤ t)."""
    wanted = _split_names(names, "indicators")
    window = await market.resolve_range(ticker, start, end)
    table = await market.indicators(ticker.upper(), wanted, window)
    return IndicatorResponse(
        ticker=table.ticker,
        start=window.start,
        end=window.end,
        dates=table.dates,
        indicators=[
            IndicatorSeries(
                name=r.name,
                category=indicators.category(r.function),
                outputs=None
                if r.outputs is None
                else {k: _clean(v.tolist()) for k, v in r.outputs.items()},
                reason=r.reason,
            )
            for r in table.results
        ],
        as_of=table.as_of,
        stale=clock.stale(table.as_of),
    )


@router.get("/{ticker}/patterns", response_model=PatternResponse)
async def ticker_patterns(
    market: MarketDataDep,
    clock: ClockDep,
    ticker: TickerPath,
    start: Day | None = None,
    end: Day | None = None,
    names: Annotated[str | None, Query(max_length=2000, description="comma-separated")] = None,
) -> PatternResponse:
    """Candlestick patterns detected per bar, bullish or bearish. Needs OHLC data."""
    wanted = _split_names(names, "patterns") if names else []
    window = await market.resolve_range(ticker, start, end)
    table = await market.patterns(ticker.upper(), wanted, window)
    return PatternResponse(
        ticker=table.ticker,
        start=window.start,
        end=window.end,
        reason=table.reason,
        patterns=[
            PatternOut(
                date=h.date.date(), pattern=h.pattern, direction=h.direction, strength=h.strength
            )
            for h in table.hits
        ],
        as_of=table.as_of,
        stale=clock.stale(table.as_of),
    )


class VerdictOut(BaseModel):
    signal: str
    reason: str
    values: dict[str, float | None]


class SummaryOut(BaseModel):
    ticker: str
    as_of: AsOf
    stale: Stale
    trend: VerdictOut
    momentum: VerdictOut
    volatility: VerdictOut
    volume: VerdictOut
    note: str = (
        "Readings of past prices, not forecasts; see /api/v1/predictions for model forecasts "
        "with their measured skill."
    )


class LevelOut(BaseModel):
    price: float
    touches: int = Field(description="swing highs/lows clustered at this level")
    last_touched: date
    distance_pct: float = Field(description="level / last close − 1")


class LevelsOut(BaseModel):
    ticker: str
    as_of: AsOf
    stale: Stale
    last_close: float
    support: list[LevelOut]
    resistance: list[LevelOut]


class ScanHit(BaseModel):
    ticker: str
    direction: str
    strength: int


class ScanOut(BaseModel):
    pattern: str
    date: date
    scanned: int = Field(description="instruments with full OHLC on that date")
    hits: list[ScanHit]
    as_of: AsOf
    stale: Stale


def _verdict(v: signals.Verdict) -> VerdictOut:
    return VerdictOut(signal=v.signal, reason=v.reason, values=v.values)


@router.get("/patterns/scan", response_model=ScanOut, responses=problems(404))
async def scan_patterns(
    market: MarketDataDep,
    clock: ClockDep,
    pattern: Annotated[str, Query(min_length=2, max_length=40, examples=["engulfing"])],
    on: Annotated[
        Day | None, Query(alias="date", description="default (and at most): the latest bar")
    ] = None,
) -> ScanOut:
    """Every instrument showing `pattern` on one date."""
    try:
        (name,) = patterns.validate_names([pattern])
    except ValueError as exc:
        raise Unprocessable("invalid_pattern", str(exc)) from exc
    day, scanned, hits = await market.scan_pattern(name, on)
    return ScanOut(
        pattern=name,
        date=day,
        scanned=scanned,
        hits=[ScanHit(ticker=t, direction=h.direction, strength=h.strength) for t, h in hits],
        as_of=day,
        stale=clock.stale(day),
    )


@router.get("/{ticker}/summary", response_model=SummaryOut)
async def ticker_summary(
    market: MarketDataDep, clock: ClockDep, ticker: TickerPath, end: Day | None = None
) -> SummaryOut:
    """Trend, momentum, volatility and volume verdicts, each with the values behind it."""
    bars, verdicts = await market.signal_summary(ticker, end)
    as_of = bars.index[-1].date()
    return SummaryOut(
        ticker=ticker.upper(),
        as_of=as_of,
        stale=clock.stale(as_of),
        **{k: _verdict(v) for k, v in verdicts.items()},
    )


@router.get("/{ticker}/levels", response_model=LevelsOut)
async def ticker_levels(
    market: MarketDataDep,
    clock: ClockDep,
    ticker: TickerPath,
    end: Day | None = None,
    lookback_days: Annotated[int, Query(ge=30, le=2520)] = 250,
) -> LevelsOut:
    """Support and resistance where swing highs and lows cluster (pivots, 1.5% tolerance)."""
    window = await market.resolve_range(ticker, None, end)
    bars = await market.history(ticker.upper(), DateRange(date(1900, 1, 1), window.end))
    if len(bars) < 30:
        raise Unprocessable("not_enough_history", "levels need at least 30 bars")
    found = signals.support_resistance(bars, lookback=lookback_days)
    as_of = bars.index[-1].date()
    return LevelsOut(ticker=ticker.upper(), as_of=as_of, stale=clock.stale(as_of), **found)


class Analogue(BaseModel):
    """One historical window (`date` is its last bar) and what followed it."""

    ticker: str
    date: date
    distance: float = Field(description="Euclidean distance of the z-normalised return paths")
    fwd_5: float | None = Field(description="log return over the next 5 bars")
    fwd_20: float | None = Field(description="log return over the next 20 bars")


class OutcomeDistribution(BaseModel):
    n: int
    mean: float | None = None
    median: float | None = None
    p10: float | None = None
    p90: float | None = None
    share_up: float | None = None


class SimilarOut(BaseModel):
    ticker: str
    as_of: AsOf
    stale: Stale
    window: int
    matches: list[Analogue]
    outcomes: dict[str, OutcomeDistribution] = Field(
        description="what followed the analogues, by horizon (5 and 20 bars)"
    )
    note: str = (
        "Analogues describe what followed similar past paths; their spread is wide and they "
        "are not a forecast."
    )


@router.get("/{ticker}/similar", response_model=SimilarOut, responses=problems(503))
async def similar(
    market: MarketDataDep,
    pool: PoolDep,
    clock: ClockDep,
    ticker: TickerPath,
    window: Annotated[int, Query(description="bars in the return path: 20, 30 or 60")] = 30,
    k: Annotated[int, Query(ge=1, le=100)] = 20,
    end: Day | None = None,
) -> SimilarOut:
    """The nearest historical analogues of the ticker's recent return path (pgvector HNSW),
    and the distribution of what followed them."""
    row = await market.instrument(ticker)
    found = await SimilarityService(pool).similar(row["ticker"], window, k, end)
    return SimilarOut(**found, stale=clock.stale(found["as_of"]))
