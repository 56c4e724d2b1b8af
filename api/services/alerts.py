"""Alerts: conditions users set on tickers or portfolios, their schemas, and their CRUD with
validation. `api.services.alert_evaluator` evaluates them on every new trading day of bars;
`api.services.notifications` stores and delivers what they produce.

Kinds and when they fire:

| kind | condition | fires |
|---|---|---|
| `price` | the close is above/below `level` | when it becomes true (a cross) |
| `move` | the close-to-close change is ≥ `percent` up/down/either | every such day |
| `indicator` | an indicator output (e.g. `rsi_14`) is above/below `value` | when it becomes true |
| `prediction` | P(up) at `horizon` is above/below `prob_up` | when it becomes true |
| `drawdown` | time-weighted wealth is ≥ `percent` below its peak | when it becomes true |

"Becomes true" means: true on this bar, and not true on the last bar evaluated (a new or edited
alert has no last state, so it fires on the first bar its condition holds). Every evaluation
is remembered per day, so a day processed twice never fires twice.
"""

from __future__ import annotations

import math
import uuid
from datetime import date
from typing import Annotated, Any, Literal

import asyncpg
import pandas as pd
from pydantic import ConfigDict, Field, RootModel

from api.db.alerts import AlertRepository, AlertRow
from api.db.market import BarRepository
from api.db.portfolios import PortfolioRepository
from api.errors import NotFound, ProblemError, Unprocessable
from api.schemas import RequestModel
from api.services.market_data import require_known
from contracts import DEFAULT_FAMILY, Family
from features import indicators

Ticker = Annotated[str, Field(min_length=1, max_length=15, examples=["AAPL"])]
Note = Annotated[str, Field(default="", max_length=200)]
INDICATOR_LOOKBACK = 400  # bars: warms up every curated indicator (the longest is a 200-day mean)


class _AlertBase(RequestModel):
    note: Note = ""
    active: bool = True


class PriceAlert(_AlertBase):
    kind: Literal["price"]
    ticker: Ticker
    direction: Literal["above", "below"]
    level: float = Field(gt=0, allow_inf_nan=False)


class MoveAlert(_AlertBase):
    kind: Literal["move"]
    ticker: Ticker
    direction: Literal["up", "down", "either"] = "either"
    percent: float = Field(gt=0, le=100, description="close-to-close change, in percent")


class IndicatorAlert(_AlertBase):
    kind: Literal["indicator"]
    ticker: Ticker
    indicator: str = Field(min_length=1, max_length=60, examples=["rsi_14"])
    output: str | None = Field(
        default=None, max_length=60, description="which output of a multi-output indicator"
    )
    direction: Literal["above", "below"]
    value: float = Field(allow_inf_nan=False)


class PredictionAlert(_AlertBase):
    kind: Literal["prediction"]
    ticker: Ticker
    horizon: Literal[1, 5, 20] = 5
    model: Family = DEFAULT_FAMILY
    direction: Literal["above", "below"]
    prob_up: float = Field(gt=0, lt=1, description="probability of a rise over the horizon")


class DrawdownAlert(_AlertBase):
    kind: Literal["drawdown"]
    portfolio_id: uuid.UUID
    percent: float = Field(gt=0, le=100, description="fall from the peak, in percent")


AlertIn = Annotated[
    PriceAlert | MoveAlert | IndicatorAlert | PredictionAlert | DrawdownAlert,
    Field(discriminator="kind"),
]


class AlertBody(RootModel[AlertIn]):
    """One alert: its `kind` decides the other fields."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"kind": "price", "ticker": "AAPL", "direction": "above", "level": 150},
                {"kind": "move", "ticker": "KO", "direction": "down", "percent": 3},
                {
                    "kind": "indicator",
                    "ticker": "MSFT",
                    "indicator": "rsi_14",
                    "direction": "below",
                    "value": 30,
                },
                {
                    "kind": "prediction",
                    "ticker": "XOM",
                    "horizon": 5,
                    "model": DEFAULT_FAMILY,
                    "direction": "above",
                    "prob_up": 0.6,
                },
            ]
        }
    )


_TOP_LEVEL = {"kind", "ticker", "portfolio_id", "note", "active"}


def condition_of(alert: AlertIn) -> dict[str, Any]:
    """The kind-specific fields, as stored in `alerts.condition`."""
    return alert.model_dump(mode="json", exclude=_TOP_LEVEL)


def public(row: AlertRow) -> dict[str, Any]:
    """An alert as the API shows it: its input fields plus its state."""
    return {
        "id": row.id,
        "kind": row.kind,
        "ticker": row.ticker,
        "portfolio_id": row.portfolio_id,
        **row.condition,
        "note": row.note,
        "active": row.active,
        "last_state": row.last_state,
        "last_checked": row.last_checked,
        "last_fired_at": row.last_fired_at,
        "fired_count": row.fired_count,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


class AlertService:
    """CRUD with validation: tickers must exist, indicators must be computable on the ticker's
    bars, portfolios must belong to the caller."""

    def __init__(self, pool: asyncpg.Pool, max_per_user: int) -> None:
        self._pool = pool
        self._repo = AlertRepository(pool)
        self._max = max_per_user

    async def _validated(
        self, user_id: uuid.UUID, alert: AlertIn
    ) -> tuple[str | None, uuid.UUID | None]:
        if isinstance(alert, DrawdownAlert):
            if await PortfolioRepository(self._pool).owned(alert.portfolio_id, user_id) is None:
                raise NotFound("portfolio", "no such portfolio")
            return None, alert.portfolio_id
        ticker = alert.ticker.strip().upper()
        await require_known(self._pool, [ticker])
        if isinstance(alert, IndicatorAlert):
            async with self._pool.acquire() as conn:
                bars = await BarRepository(conn).history(ticker, None, INDICATOR_LOOKBACK)
            try:
                latest_indicator(bars, alert.indicator, alert.output)
            except ValueError as exc:
                raise Unprocessable("invalid_indicator", str(exc)) from exc
        return ticker, None

    async def create(self, user_id: uuid.UUID, alert: AlertIn) -> AlertRow:
        if await self._repo.count(user_id) >= self._max:
            raise ProblemError(
                409, "too_many_alerts", f"at most {self._max} alerts; delete some first"
            )
        ticker, portfolio_id = await self._validated(user_id, alert)
        return await self._repo.create(
            user_id,
            alert.kind,
            ticker,
            portfolio_id,
            condition_of(alert),
            alert.note,
            alert.active,
        )

    async def get(self, user_id: uuid.UUID, alert_id: uuid.UUID) -> AlertRow:
        row = await self._repo.get(user_id, alert_id)
        if row is None:
            raise NotFound("alert", "no such alert")
        return row

    async def list(self, user_id: uuid.UUID) -> list[AlertRow]:
        return await self._repo.of_user(user_id)

    async def replace(self, user_id: uuid.UUID, alert_id: uuid.UUID, alert: AlertIn) -> AlertRow:
        await self.get(user_id, alert_id)  # 404 before validating someone else's alert
        ticker, portfolio_id = await self._validated(user_id, alert)
        row = await self._repo.replace(
            user_id,
            alert_id,
            ticker,
            portfolio_id,
            alert.kind,
            condition_of(alert),
            alert.note,
            alert.active,
        )
        if row is None:
            raise NotFound("alert", "no such alert")
        return row

    async def update(
        self, user_id: uuid.UUID, alert_id: uuid.UUID, note: str | None, active: bool | None
    ) -> AlertRow:
        row = await self._repo.update(user_id, alert_id, note, active)
        if row is None:
            raise NotFound("alert", "no such alert")
        return row

    async def delete(self, user_id: uuid.UUID, alert_id: uuid.UUID) -> None:
        if not await self._repo.delete(user_id, alert_id):
            raise NotFound("alert", "no such alert")


def latest_indicator(bars: pd.DataFrame, name: str, output: str | None) -> tuple[date, float]:
    """(date, value) of an indicator output on the last bar; ValueError with the reason when it
    cannot be computed (unknown name or output, a close-only series, too little history)."""
    try:
        call = indicators.parse(name)
    except indicators.IndicatorError as exc:
        raise ValueError(str(exc)) from exc
    if bars.empty:
        raise ValueError("the ticker has no bars")
    result = indicators.compute(bars, call)
    if result.outputs is None:
        raise ValueError(f"{name}: {result.reason}")
    if output is None:
        if len(result.outputs) > 1:
            raise ValueError(f"{name} has several outputs; choose one of {sorted(result.outputs)}")
        (series,) = result.outputs.values()
    elif output in result.outputs:
        series = result.outputs[output]
    else:
        raise ValueError(f"{name} has no output {output!r}; choose one of {sorted(result.outputs)}")
    value = float(series.iloc[-1])
    if not math.isfinite(value):
        raise ValueError(f"{name} has no value on the last bar yet (too little history)")
    return series.index[-1].date(), value
