"""Predictions as the API serves them: routing, cache, prices and probabilities from quantiles.

The request path, once: one index lookup for the bars to forecast from, the routing (kept a
few seconds in memory), one cache read; on a miss one query for every input series, one call
to the model replica with the chosen version, and the answers serialised once — the JSON that
is cached is the JSON that is sent. The prediction log is written in batches off the path
(api.services.prediction_log).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from statistics import NormalDist
from typing import Any

import asyncpg
from pydantic import BaseModel, Field

from api.cache import JsonCache
from api.db.ab import LoggedPrediction, PredictionLogRepository
from api.db.market import BarRepository
from api.errors import NotFound, ProblemError, Unprocessable
from api.services.ab import ChallengerWeights, assign
from api.services.market_data import MarketDataService
from api.services.prediction_log import PredictionLog
from contracts import (
    HORIZONS,
    MARKET_TICKER,
    Family,
    Forecast,
    ForecastBatch,
    ForecastRequest,
    Horizon,
    HorizonSkill,
    ModelUnavailable,
    Predictor,
    SeriesInput,
)
from features.bars import normalise_ticker

LOOKBACK_BARS = 400  # covers the longest feature (200-day average) plus any model window ≤ 200
MAX_BATCH = 100
Z90 = NormalDist().inv_cdf(0.9)
# (family, version, variant, forecasts served, of which from the cache): for metrics
Served = Callable[[str, str, str, int, int], None]


class PriceQuantiles(BaseModel):
    p10: float
    p50: float
    p90: float


class LogReturnQuantiles(BaseModel):
    q10: float
    q50: float
    q90: float


class ModelRef(BaseModel):
    family: str
    version: str
    variant: str


class Skill(HorizonSkill):
    """The model's walk-forward skill at this horizon (from its model card)."""

    skill_vs_rw: float = Field(description="walk-forward 1 - pinball/pinball(random walk)")
    reference: str | None = Field(
        default=None, description="the strongest classical baseline, picked on validation"
    )
    skill_vs_reference: float | None = Field(
        default=None, description="walk-forward 1 - pinball/pinball(reference)"
    )
    dm_pvalue_vs_reference: float | None = Field(
        default=None, description="one-sided Diebold-Mariano p-value against the reference"
    )


class Prediction(BaseModel):
    ticker: str
    as_of: date
    horizon: int
    last_close: float
    quantiles: PriceQuantiles
    log_return_quantiles: LogReturnQuantiles
    prob_up: float = Field(ge=0, le=1)
    model: ModelRef
    skill: Skill | None


def prob_up(q10: float, q50: float, q90: float) -> float:
    """P(log return > 0) from three quantiles: a two-piece normal matched at the median.

    Below the median the spread comes from q10, above it from q90, so F(q10)=0.1, F(q50)=0.5 and
    F(q90)=0.9 hold exactly and skewed forecasts keep their skew.
    """
    sigma = (q50 - q10) / Z90 if q50 > 0 else (q90 - q50) / Z90
    if sigma <= 0:
        return 1.0 if q50 > 0 else 0.0
    return 1.0 - NormalDist().cdf((0.0 - q50) / sigma)  # stdlib: ~50x cheaper than scipy's


@dataclass(frozen=True)
class Target:
    ticker: str
    sector: str | None
    as_of: date  # the bar the forecast is made from
    live: bool  # made from the ticker's newest bar, not for a past as-of date


def _shape(forecast: Forecast, batch: ForecastBatch, last_close: float) -> Prediction:
    """One horizon's forecast -> the public payload (prices, probability, model, skill)."""
    skill = batch.skill.get(forecast.horizon)
    q10, q50, q90 = forecast.q10, forecast.q50, forecast.q90
    return Prediction(
        ticker=forecast.ticker,
        as_of=forecast.as_of,
        horizon=forecast.horizon,
        last_close=last_close,
        quantiles=PriceQuantiles(
            p10=last_close * math.exp(q10),
            p50=last_close * math.exp(q50),
            p90=last_close * math.exp(q90),
        ),
        log_return_quantiles=LogReturnQuantiles(q10=q10, q50=q50, q90=q90),
        prob_up=prob_up(q10, q50, q90),
        model=ModelRef(family=batch.family, version=batch.version, variant=batch.variant),
        skill=None if skill is None else Skill.model_validate(skill.model_dump()),
    )


def _past(r: dict[str, Any]) -> dict[str, Any]:
    y = r["realised_log_return"]
    return {
        "as_of": r["as_of"],
        "horizon": r["horizon"],
        "model": {"family": r["family"], "version": r["version"], "variant": r["variant"]},
        "live": r["live"],
        "log_return_quantiles": {"q10": r["q10"], "q50": r["q50"], "q90": r["q90"]},
        "outcome": None
        if y is None
        else {
            "date": r["outcome_date"],
            "realised_log_return": y,
            "pinball_loss": r["pinball_loss"],
            "inside_80": r["q10"] <= y <= r["q90"],
            "direction_right": (y > 0) == (r["q50"] > 0),
        },
    }


class PredictionService:
    def __init__(
        self,
        pool: asyncpg.Pool,
        predictor: Predictor | None,
        cache: JsonCache,
        prediction_log: PredictionLog,
        weights: ChallengerWeights,
        on_served: Served | None = None,
    ) -> None:
        self._pool = pool
        self._predictor = predictor
        self._cache = cache
        self._log = prediction_log
        self._weights = weights
        self._on_served = on_served
        self._market = MarketDataService(pool)

    async def _targets(self, raw_tickers: list[str], as_of: date | None) -> list[Target]:
        """Which bar each ticker is forecast from (all tickers in one query of index lookups,
        enough for a cache hit); unknown tickers 404, tickers without bars then 422."""
        try:
            tickers = list(dict.fromkeys(normalise_ticker(t) for t in raw_tickers))
        except ValueError as exc:
            raise Unprocessable("invalid_ticker", str(exc)) from exc
        async with self._pool.acquire() as conn:
            found = await BarRepository(conn).bar_dates_many(tickers, as_of)
        targets = []
        for ticker in tickers:
            entry = found.get(ticker)
            if entry is None:
                raise NotFound("ticker", f"no instrument {ticker!r}; search with /api/v1/stocks?q=")
            if entry.as_of is None:
                raise Unprocessable("no_bars", f"{ticker} has no bars on or before {as_of}")
            targets.append(
                Target(ticker, entry.sector, entry.as_of, entry.as_of == entry.last_date)
            )
        return targets

    async def predict_json(
        self,
        tickers: list[str],
        horizon: Horizon,
        family: Family,
        user_key: str,
        as_of: date | None = None,
    ) -> list[str]:
        """Each ticker's prediction as the JSON document sent to clients (one `Prediction`):
        cached ones as stored, the misses from one predictor call."""
        if not 1 <= len(tickers) <= MAX_BATCH:
            raise Unprocessable("too_many_tickers", f"give 1 to {MAX_BATCH} tickers")
        if self._predictor is None:
            raise ProblemError(503, "model_not_deployed", "no model serving is configured")
        targets = await self._targets(tickers, as_of)
        routing = await self._predictor.routing(family)
        if routing.champion is None:
            raise ProblemError(
                503,
                "model_not_deployed",
                f"no {family} champion is registered; train and register one",
            )
        weight = await self._weights.share(routing)
        variant = assign(user_key, family, weight, has_challenger=routing.challenger is not None)
        version = routing.version_of(variant)
        assert version is not None
        keys = [self._cache.key(t.ticker, horizon, family, version, t.as_of) for t in targets]
        found = await self._cache.get_raw_many(keys)
        missing = [t for t, hit in zip(targets, found, strict=True) if hit is None]
        if missing:
            fresh = await self._forecast(missing, family, variant, version)
            found = [
                hit or fresh[(t.ticker, horizon)] for t, hit in zip(targets, found, strict=True)
            ]
        if self._on_served is not None:
            self._on_served(family, version, variant, len(targets), len(targets) - len(missing))
        return [hit for hit in found if hit is not None]

    async def predict_many(
        self,
        tickers: list[str],
        horizon: Horizon,
        family: Family,
        user_key: str,
        as_of: date | None = None,
    ) -> list[dict[str, Any]]:
        """`predict_json`, parsed: for the sockets, alerts and chat tools that read the values."""
        return [
            json.loads(doc)
            for doc in await self.predict_json(tickers, horizon, family, user_key, as_of)
        ]

    async def model_card(self, family: str, version: str) -> dict[str, Any] | None:
        """The walk-forward metrics and aliases of one registered version, or None when no
        model serving is configured or the version is not in the family's catalogue."""
        if self._predictor is None:
            return None
        catalogue = await self._predictor.catalogue(family)
        found = next((v for v in catalogue.versions if v.version == version), None)
        return found.model_dump() if found else None

    async def history(
        self, raw_ticker: str, horizon: Horizon | None, family: Family | None, limit: int
    ) -> tuple[str, list[dict[str, Any]]]:
        """Past forecasts with realised outcomes (due ones are scored first, and this
        process's queued log rows are written first, so a forecast just served is listed)."""
        row = await self._market.instrument(raw_ticker)
        await self._log.flush()
        log_repo = PredictionLogRepository(self._pool)
        await log_repo.resolve_due(family)
        rows = await log_repo.for_ticker(row["ticker"], horizon, family, limit)
        return row["ticker"], [_past(dict(r)) for r in rows]

    async def _inputs(
        self, targets: list[Target]
    ) -> tuple[dict[str, SeriesInput], SeriesInput | None]:
        """Every target's closes and the market's over all their lookbacks: one query."""
        newest, oldest = max(t.as_of for t in targets), min(t.as_of for t in targets)
        reach = LOOKBACK_BARS + (newest - oldest).days
        wanted = [(t.ticker, t.as_of, LOOKBACK_BARS) for t in targets]
        async with self._pool.acquire() as conn:
            *closes, market = await BarRepository(conn).recent_closes(
                [*wanted, (MARKET_TICKER, newest, reach)]
            )
        series = {
            t.ticker: SeriesInput(ticker=t.ticker, sector=t.sector, days=days, closes=values)
            for t, (days, values) in zip(targets, closes, strict=True)
        }
        return series, (
            SeriesInput(ticker=MARKET_TICKER, days=market[0], closes=market[1])
            if market[0]
            else None
        )

    async def _forecast(
        self, targets: list[Target], family: Family, variant: str, version: str
    ) -> dict[tuple[str, int], str]:
        """Read the inputs and call the predictor once for `version`; queue every horizon it
        returned for the log and cache it, serialised once."""
        series, market = await self._inputs(targets)
        request = ForecastRequest(
            family=family,
            variant=variant,
            version=version,
            series=list(series.values()),
            market=market,
        )
        try:
            batch = await self._predictor.forecast(request)  # type: ignore[union-attr]
        except ModelUnavailable as exc:
            raise ProblemError(503, "model_not_deployed", str(exc)) from exc
        shaped = {
            (f.ticker, f.horizon): _shape(f, batch, series[f.ticker].closes[-1]).model_dump_json()
            for f in batch.forecasts
        }
        short = [t.ticker for t in targets if (t.ticker, HORIZONS[0]) not in shaped]
        if short:
            raise Unprocessable(
                "not_enough_history", f"too little history to predict {', '.join(short)}"
            )
        live = {t.ticker: t.live for t in targets}
        logged = [
            LoggedPrediction.of(f, family, batch.version, variant, live[f.ticker])
            for f in batch.forecasts
        ]
        if batch.shadow is not None:  # the previous champion on probation duty: live ones only
            logged += [
                LoggedPrediction.of(f, family, batch.shadow.version, "shadow", True)
                for f in batch.shadow.forecasts
                if live.get(f.ticker)
            ]
        self._log.add(logged)  # scored for A/B and rollback; written off the request path
        as_of = {f.ticker: f.as_of for f in batch.forecasts}
        await self._cache.set_raw_many(
            {
                self._cache.key(t, h, family, batch.version, as_of[t]): doc
                for (t, h), doc in shaped.items()
            }
        )
        return shaped
