"""Predictions as the API serves them: routing, cache, prices and probabilities from quantiles."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from statistics import NormalDist
from typing import Any

import asyncpg

from api.cache import JsonCache
from api.db.ab import LoggedPrediction, PredictionLogRepository
from api.db.market import BarRepository
from api.errors import NotFound, ProblemError, Unprocessable
from api.services.ab import CHALLENGER, assign
from api.services.market_data import MarketDataService
from contracts import (
    FAMILIES,
    HORIZONS,
    MARKET_TICKER,
    ForecastBatch,
    ForecastRequest,
    ModelUnavailable,
    Predictor,
    SeriesInput,
)
from features.bars import normalise_ticker

LOOKBACK_BARS = 400  # covers the longest feature (200-day average) plus any model window ≤ 200
MAX_BATCH = 100
Z90 = NormalDist().inv_cdf(0.9)


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


def _shape(forecast: dict[str, Any], batch: ForecastBatch, last_close: float) -> dict[str, Any]:
    """One horizon's forecast -> the public payload (prices, probability, model, skill)."""
    h = forecast["horizon"]
    skill = batch.skill.get(h)
    return {
        "ticker": forecast["ticker"],
        "as_of": str(forecast["as_of"]),
        "horizon": h,
        "last_close": last_close,
        "quantiles": {
            p: last_close * math.exp(forecast[q])
            for p, q in (("p10", "q10"), ("p50", "q50"), ("p90", "q90"))
        },
        "log_return_quantiles": {q: forecast[q] for q in ("q10", "q50", "q90")},
        "prob_up": prob_up(forecast["q10"], forecast["q50"], forecast["q90"]),
        "model": {"family": batch.family, "version": batch.version, "variant": batch.variant},
        "skill": skill.model_dump() if skill else None,
    }


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
        on_served: Callable[[list[dict[str, Any]], int], None] | None = None,
    ) -> None:
        self._pool = pool
        self._predictor = predictor
        self._cache = cache
        self._on_served = on_served  # (forecasts, cache hits): for metrics
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

    def _validate(self, family: str, horizon: int) -> None:
        if family not in FAMILIES:
            raise Unprocessable("unknown_model", f"model must be one of {', '.join(FAMILIES)}")
        if horizon not in HORIZONS:
            raise Unprocessable(
                "invalid_horizon", f"horizon {horizon} is not offered; choose one of {HORIZONS}"
            )

    async def predict_many(
        self,
        tickers: list[str],
        horizon: int,
        family: str,
        user_key: str,
        as_of: date | None = None,
    ) -> list[dict[str, Any]]:
        """Cached forecasts where present; one predictor call for all the misses."""
        self._validate(family, horizon)
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
        variant = assign(
            user_key,
            family,
            routing.challenger_weight,
            has_challenger=routing.challenger is not None,
        )
        version = routing.challenger if variant == CHALLENGER else routing.champion
        keys = [self._cache.key(t.ticker, horizon, family, version, t.as_of) for t in targets]
        found = await self._cache.get_many(keys)
        missing = [t for t, hit in zip(targets, found, strict=True) if hit is None]
        if missing:
            fresh = await self._forecast(missing, family, variant)
            found = [
                hit or fresh[(t.ticker, horizon)] for t, hit in zip(targets, found, strict=True)
            ]
        if self._on_served is not None:
            self._on_served(found, len(targets) - len(missing))
        return found

    async def model_card(self, family: str, version: str) -> dict[str, Any] | None:
        """The walk-forward metrics and aliases of one registered version, or None when no
        model serving is configured or the version is not in the family's catalogue."""
        if self._predictor is None:
            return None
        catalogue = await self._predictor.catalogue(family)
        found = next((v for v in catalogue.versions if v.version == version), None)
        return found.model_dump() if found else None

    async def history(
        self, raw_ticker: str, horizon: int | None, family: str | None, limit: int
    ) -> tuple[str, list[dict[str, Any]]]:
        """Past forecasts with realised outcomes (due ones are scored first)."""
        row = await self._market.instrument(raw_ticker)
        if family is not None and family not in FAMILIES:
            raise Unprocessable("unknown_model", f"model must be one of {', '.join(FAMILIES)}")
        if horizon is not None and horizon not in HORIZONS:
            raise Unprocessable("invalid_horizon", f"horizon must be one of {HORIZONS}")
        log_repo = PredictionLogRepository(self._pool)
        await log_repo.resolve_due(family)
        rows = await log_repo.for_ticker(row["ticker"], horizon, family, limit)
        return row["ticker"], [_past(dict(r)) for r in rows]

    async def _forecast(
        self,
        targets: list[Target],
        family: str,
        variant: str,
    ) -> dict[tuple[str, int], dict[str, Any]]:
        """Read the closes and call the predictor once; log and cache every horizon it returned
        under its version."""
        newest, oldest = max(t.as_of for t in targets), min(t.as_of for t in targets)
        async with self._pool.acquire() as conn:
            bars = BarRepository(conn)
            closes = await bars.recent_closes_many(
                {t.ticker: t.as_of for t in targets}, LOOKBACK_BARS
            )
            # the market over every target's lookback, for the market-context features
            reach = LOOKBACK_BARS + (newest - oldest).days
            market = (await bars.recent_closes_many({MARKET_TICKER: newest}, reach))[MARKET_TICKER]
        request = ForecastRequest(
            family=family,
            variant=variant,
            series=[
                SeriesInput(
                    ticker=t.ticker,
                    sector=t.sector,
                    days=closes[t.ticker][0],
                    closes=closes[t.ticker][1],
                )
                for t in targets
            ],
            market=SeriesInput(ticker=MARKET_TICKER, days=market[0], closes=market[1])
            if market[0]
            else None,
        )
        try:
            batch = await self._predictor.forecast(request)  # type: ignore[union-attr]
        except ModelUnavailable as exc:
            raise ProblemError(503, "model_not_deployed", str(exc)) from exc
        last = {t: series[1][-1] for t, series in closes.items()}
        shaped = {
            (f.ticker, f.horizon): _shape(f.model_dump(), batch, last[f.ticker])
            for f in batch.forecasts
        }
        short = [t.ticker for t in targets if (t.ticker, HORIZONS[0]) not in shaped]
        if short:
            raise Unprocessable(
                "not_enough_history", f"too little history to predict {', '.join(short)}"
            )
        # logged before caching: a cache hit is never logged, so a failed log must not be cached
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
        await PredictionLogRepository(self._pool).record(logged)  # scored for A/B and rollback
        await self._cache.set_many(
            {
                self._cache.key(t, h, family, batch.version, value["as_of"]): value
                for (t, h), value in shaped.items()
            }
        )
        return shaped
