"""Tools the chat model may call, run server-side with the caller's permissions.

Each tool is one of the API's own services (the numbers are the ones its routes serve), offered
only when the caller's scopes allow it: market data needs `read:market`, forecasts
`read:predictions`, portfolios `read:portfolio` (and only the caller's own portfolios). A tool
never raises: a refused or failed call returns `{"error": code, "detail": ...}` for the model to
read, so a bad ticker is an answer, not an outage. Answers from market data say how fresh they
are (`as_of`, `stale`), read off the market clock like the routes' answers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Literal

import asyncpg
import numpy as np
import structlog
from pydantic import BaseModel, Field, ValidationError

from api.errors import ProblemError
from api.services.auth import Principal
from api.services.clock import MarketClock
from api.services.market import MarketService
from api.services.market_data import DateRange, MarketDataService
from api.services.portfolios import PortfolioService
from api.services.predictions import PredictionService
from contracts import DEFAULT_FAMILY, Family, Horizon
from features import indicators

log = structlog.get_logger(__name__)

DEFAULT_INDICATORS = ["rsi_14", "macd_12_26_9", "sma_50", "sma_200"]
MAX_PORTFOLIOS = 5
MAX_POSITIONS = 20  # the largest holdings of each


class TickerArgs(BaseModel):
    ticker: str = Field(min_length=1, max_length=15, description="e.g. AAPL")


class HistoryArgs(TickerArgs):
    days: int = Field(default=365, ge=20, le=3650, description="calendar days to summarise")


class IndicatorArgs(TickerArgs):
    names: list[str] = Field(
        default_factory=lambda: list(DEFAULT_INDICATORS),
        min_length=1,
        max_length=8,
        description="pandas-ta style names, e.g. rsi_14, macd_12_26_9, sma_50, bbands_20_2",
    )


class PatternArgs(TickerArgs):
    days: int = Field(default=30, ge=5, le=365, description="calendar days to scan")


class PredictionArgs(TickerArgs):
    horizon: Horizon = Field(default=5, description="trading days ahead")
    model: Family = DEFAULT_FAMILY


class PortfolioArgs(BaseModel):
    name: str | None = Field(default=None, max_length=80, description="one portfolio by name")


class SectorArgs(BaseModel):
    period: Literal["1d", "1w", "1m", "ytd", "1y"] = "1m"


@dataclass(frozen=True)
class ToolResult:
    name: str
    arguments: dict[str, Any]
    data: dict[str, Any]

    @property
    def ok(self) -> bool:
        return "error" not in self.data


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    arguments: type[BaseModel]
    scope: str

    def schema(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.arguments.model_json_schema(),
            },
        }


SPECS = (
    ToolSpec(
        "quote", "Latest close, change and 52-week range of a ticker.", TickerArgs, "read:market"
    ),
    ToolSpec(
        "history_summary",
        "Price history summary (return, range, volatility) with trend, momentum, volatility and "
        "volume readings.",
        HistoryArgs,
        "read:market",
    ),
    ToolSpec("indicators", "Latest values of technical indicators.", IndicatorArgs, "read:market"),
    ToolSpec("patterns", "Candlestick patterns detected recently.", PatternArgs, "read:market"),
    ToolSpec(
        "prediction",
        "Model forecast (10/50/90% price quantiles, probability of going up) with its model card.",
        PredictionArgs,
        "read:predictions",
    ),
    ToolSpec(
        "portfolio_summary",
        "The user's own portfolios: value, cash, P&L and positions.",
        PortfolioArgs,
        "read:portfolio",
    ),
    ToolSpec(
        "sector_performance", "Sector returns against the S&P 500.", SectorArgs, "read:market"
    ),
)


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


class ChatTools:
    def __init__(
        self,
        pool: asyncpg.Pool,
        principal: Principal,
        market_data: MarketDataService,
        market: MarketService,
        predictions: PredictionService,
        clock: MarketClock | None = None,
    ) -> None:
        self._pool = pool
        self._principal = principal
        self._market_data = market_data
        self._market = market
        self._predictions = predictions
        self._clock = clock or MarketClock(pool)  # the app's, else one of its own
        self._handlers: dict[str, Callable[[Any], Awaitable[dict[str, Any]]]] = {
            "quote": self.quote,
            "history_summary": self.history_summary,
            "indicators": self.indicators,
            "patterns": self.patterns,
            "prediction": self.prediction,
            "portfolio_summary": self.portfolio_summary,
            "sector_performance": self.sector_performance,
        }

    def allowed(self) -> list[ToolSpec]:
        return [s for s in SPECS if self._principal.allows(s.scope)]

    def schemas(self) -> list[dict[str, Any]]:
        return [s.schema() for s in self.allowed()]

    async def run(self, name: str, raw_arguments: str | dict[str, Any]) -> ToolResult:
        spec = next((s for s in SPECS if s.name == name), None)
        try:
            given = json.loads(raw_arguments) if isinstance(raw_arguments, str) else raw_arguments
        except json.JSONDecodeError:
            given = None
        arguments = given if isinstance(given, dict) else {}
        if spec is None:
            return ToolResult(name, arguments, {"error": "unknown_tool", "detail": "no such tool"})
        if not self._principal.allows(spec.scope):
            detail = f"your credentials lack the {spec.scope!r} scope"
            return ToolResult(name, arguments, {"error": "insufficient_scope", "detail": detail})
        try:
            parsed = spec.arguments.model_validate(arguments)
            data = await self._handlers[name](parsed)
        except ValidationError as exc:
            first = exc.errors()[0]
            detail = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
            data = {"error": "invalid_arguments", "detail": detail}
        except ProblemError as exc:
            data = {"error": exc.code, "detail": exc.detail}
        except Exception:
            log.exception("chat_tool_failed", tool=name)
            data = {"error": "tool_failed", "detail": "the tool failed; try again later"}
        return ToolResult(name, arguments, data)

    async def quote(self, args: TickerArgs) -> dict[str, Any]:
        row = await self._market_data.instrument(args.ticker)
        quote = await self._market_data.quote(row["ticker"], await self._clock.now())
        return {**quote.model_dump(), "name": row["name"]}

    async def history_summary(self, args: HistoryArgs) -> dict[str, Any]:
        bars, verdicts = await self._market_data.signal_summary(args.ticker, None)
        closes = bars["close"].loc[bars.index[-1] - timedelta(days=args.days) :]
        returns = np.log(closes).diff().dropna()
        end = closes.index[-1].date()
        return {
            "ticker": args.ticker.upper(),
            "start": closes.index[0].date(),
            "end": end,
            **await self._freshness(end),
            "first_close": float(closes.iloc[0]),
            "last_close": float(closes.iloc[-1]),
            "return": float(closes.iloc[-1] / closes.iloc[0] - 1),
            "highest_close": float(closes.max()),
            "lowest_close": float(closes.min()),
            "annualised_volatility": _finite(float(returns.std() * math.sqrt(252))),
            "readings": {
                k: {"signal": v.signal, "values": v.values, "reason": v.reason}
                for k, v in verdicts.items()
            },
        }

    async def indicators(self, args: IndicatorArgs) -> dict[str, Any]:
        window = await self._market_data.resolve_range(args.ticker, None, None)
        recent = DateRange(window.end - timedelta(days=10), window.end)
        table = await self._market_data.indicators(args.ticker.upper(), args.names, recent)
        values: dict[str, Any] = {}
        for result in table.results:
            if result.outputs is None:
                values[result.name] = {"reason": result.reason}
                continue
            values[result.name] = {
                output: _finite(float(series.iloc[-1])) if len(series) else None
                for output, series in result.outputs.items()
            }
            values[result.name]["category"] = indicators.category(result.function)
        return {
            "ticker": table.ticker,
            "date": table.dates[-1] if table.dates else None,
            **await self._freshness(table.as_of),
            **values,
        }

    async def patterns(self, args: PatternArgs) -> dict[str, Any]:
        window = await self._market_data.resolve_range(args.ticker, None, None)
        recent = DateRange(window.end - timedelta(days=args.days), window.end)
        table = await self._market_data.patterns(args.ticker.upper(), [], recent)
        return {
            "ticker": table.ticker,
            "start": recent.start,
            "end": recent.end,
            **await self._freshness(table.as_of),
            "reason": table.reason,
            "hits": [
                {
                    "date": h.date.date(),
                    "pattern": h.pattern,
                    "direction": h.direction,
                    "strength": h.strength,
                }
                for h in table.hits[-10:]
            ],
        }

    async def prediction(self, args: PredictionArgs) -> dict[str, Any]:
        caller = f"user:{self._principal.user_id}"  # the same sticky A/B key as the routes
        try:
            (forecast,) = await self._predictions.predict_many(
                [args.ticker], args.horizon, args.model, caller
            )
        except ProblemError as exc:
            if exc.status != 503:
                raise
            return {"available": False, "reason": f"no model available: {exc.detail}"}
        model = forecast["model"]
        card = await self._predictions.model_card(model["family"], model["version"])
        return {
            "available": True,
            "ticker": forecast["ticker"],
            "as_of": forecast["as_of"],
            "stale": forecast["stale"],
            "horizon_trading_days": forecast["horizon"],
            "last_close": forecast["last_close"],
            "price_quantiles": forecast["quantiles"],
            "interval": "p10 to p90 is an 80% band",
            "prob_up": forecast["prob_up"],
            "model_card": {
                **model,
                "skill_at_this_horizon": forecast["skill"],
                "walk_forward_metrics": card["metrics"] if card else None,
                "aliases": card["aliases"] if card else None,
            },
        }

    async def portfolio_summary(self, args: PortfolioArgs) -> dict[str, Any]:
        service = PortfolioService(self._pool)
        today = (await self._clock.now()).today
        owned = await service.of_user(self._principal.user_id)
        if args.name is not None:
            owned = [p for p in owned if p.name.casefold() == args.name.strip().casefold()]
        out = []
        for portfolio in owned[:MAX_PORTFOLIOS]:
            value = await service.valuation(portfolio, today=today)
            out.append(
                {
                    "name": portfolio.name,
                    "currency": portfolio.base_currency,
                    "market_value": value.market_value,
                    "cash": value.cash,
                    "invested": value.invested,
                    "realised_pnl": value.realised_pnl,
                    "unrealised_pnl": value.unrealised_pnl,
                    "positions": [
                        {
                            "ticker": v.ticker,
                            "quantity": v.quantity,
                            "last_price": v.last_price,
                            "price_date": v.price_date,
                            "market_value": v.market_value,
                            "unrealised_pnl": v.unrealised_pnl,
                            "weight": v.weight,
                        }
                        for v in sorted(
                            (v for v in value.positions if v.quantity),
                            key=lambda v: -(v.market_value or 0),
                        )[:MAX_POSITIONS]
                    ],
                }
            )
        return {"portfolios": out, "total_portfolios": len(owned)}

    async def sector_performance(self, args: SectorArgs) -> dict[str, Any]:
        found = await self._market.sectors(args.period)
        return {**found, **await self._freshness(date.fromisoformat(found["as_of"]))}

    async def _freshness(self, as_of: date | None) -> dict[str, Any]:
        """`as_of` and whether it is stale on the market clock (as the routes answer)."""
        return {"as_of": as_of, "stale": (await self._clock.now()).stale(as_of)}


def jsonable(data: dict[str, Any]) -> str:
    """Tool data as JSON text (dates and exact decimals as strings)."""
    return json.dumps(data, default=str, ensure_ascii=False, sort_keys=True)
