"""Response and request models (typed payloads everywhere; OpenAPI is generated from these)."""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
)

# Calendar days the API accepts: pandas' nanosecond timestamps end in 1677 and 2262, and no
# market data, transaction or forecast lies outside these bounds.
EARLIEST_DAY = date(1900, 1, 1)
LATEST_DAY = date(2199, 12, 31)
_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def _iso_day(value: object) -> object:
    """Only YYYY-MM-DD (or a date): lax parsing would read `0` as 1970-01-01."""
    if isinstance(value, int | float) or (isinstance(value, str) and not _ISO_DAY.fullmatch(value)):
        raise ValueError("expected a date as YYYY-MM-DD")
    return value


def _supported_day(value: date) -> date:
    if not EARLIEST_DAY <= value <= LATEST_DAY:
        raise ValueError(f"dates must lie between {EARLIEST_DAY} and {LATEST_DAY}")
    return value


class RequestModel(BaseModel):
    """A request body: fields it does not define are refused (422), never silently dropped, so
    a misspelt field is an error the client sees. Every body model derives from this (checked
    when the app is built, api.security.declarations)."""

    model_config = ConfigDict(extra="forbid")


Day = Annotated[date, BeforeValidator(_iso_day), AfterValidator(_supported_day)]
"""A calendar day in a request (query or body), validated at the edge."""


# Money and quantities: exact decimals, bounded so every value fits Postgres `numeric` and the
# ledger's arithmetic stays exact: 0 ≤ x ≤ 10^12, at most 10 decimal places.
MAX_DECIMAL = Decimal("1e12")
DECIMAL_PLACES = 10


def plain_decimal(value: Decimal) -> str:
    """Positional notation, never scientific: `"100000"`, not `"1E+5"`; `"0.0000001"`, not
    `"1E-7"` (a spreadsheet or a JavaScript client reads either the same way)."""
    text = format(value, "f")
    return "0" if text in ("-0", "") else text


def _positional(value: Decimal) -> Decimal:
    return Decimal(plain_decimal(value))


Amount = Annotated[
    Decimal,
    Field(ge=0, le=MAX_DECIMAL, decimal_places=DECIMAL_PLACES),
    AfterValidator(_positional),
]
"""A quantity, price or amount in a request (validated at the edge, stored exactly)."""

PlainDecimal = Annotated[Decimal, PlainSerializer(plain_decimal, return_type=str, when_used="json")]
"""A decimal in a response: a JSON string in positional notation."""

# Every answer computed from market data says how fresh it is: no silent staleness. `stale` is
# read off the market clock when the answer is sent (api.services.clock.ClockNow.stale).
AsOf = Annotated[date, Field(description="the date of the newest bar the answer is computed from")]
Stale = Annotated[
    bool,
    Field(
        description="the newest bar is older than the last completed session (under a replay: "
        "the replay day), so the answer may be out of date"
    ),
]


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
    as_of: date | None = Field(description="the newest bar listed; null when the range has none")
    stale: Stale


class Quote(BaseModel):
    ticker: str
    date: Annotated[date, Field(description="the latest bar's date (the same as `as_of`)")]
    close: float
    previous_close: float | None
    change: float | None
    change_pct: float | None
    open: float | None
    high: float | None
    low: float | None
    volume: float | None
    week52_high: float = Field(description="highest high (close where no high) in 52 weeks")
    week52_low: float
    as_of: AsOf
    stale: Stale


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
    as_of: date | None = Field(description="the newest bar read; null when there is none")
    stale: Stale


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
    as_of: date | None = Field(description="the newest bar read; null when there is none")
    stale: Stale


class ImportResult(BaseModel):
    ticker: str
    rows: int
    inserted: int
    updated: int


class Health(BaseModel):
    status: str


class FeedHealth(BaseModel):
    """Where the market data stands: how current it is and whether its source is failing."""

    mode: Literal["replay", "live", "off"]
    provider: str | None = Field(description="the live provider (live mode and `data update`)")
    clock: date | None = Field(description="the replay day every query is bounded by (replay)")
    newest_bar: date | None = Field(description="the newest bar any query can see")
    last_session: date = Field(description="the last completed session by the product's clock")
    sessions_behind: int = Field(description="completed sessions newer than the newest bar")
    last_success: datetime | None = Field(description="the live provider's last good round")
    lag_s: float | None = Field(description="seconds since that good round")
    failures: int = Field(description="consecutive failed provider rounds")
    last_error: str | None
    healthy: bool = Field(description="data current (≤ 1 session behind) and provider not failing")


class WarmupTask(BaseModel):
    """Work `stockcopilot up` does after the API is ready; serving does not wait for it."""

    name: str = Field(description="e.g. `similarity index`, `network models`")
    state: Literal["pending", "running", "done", "failed"]
    detail: str = Field(description="progress, or why it failed")
    started_at: datetime | None
    finished_at: datetime | None


class Readiness(BaseModel):
    status: Literal["ready", "degraded", "unavailable"] = Field(
        description="degraded: Redis is unreachable (the API serves without its cache), or the "
        "market feed is failing or behind (see `feed`)"
    )
    checks: dict[str, str]
    feed: FeedHealth | None = None
    warming: list[WarmupTask] = Field(
        default_factory=list,
        description="this start's background work (similarity index, network models, the "
        "classical challenger); `checks.warmup` names what is not done yet",
    )
