"""Predictions as the API serves them: routing, cache, prices and probabilities from quantiles.

The request path, once: one index lookup for the bars to forecast from, the routing (kept a
few seconds in memory), one cache read; on a miss one query for every input series, one call
to the model replica with the chosen version, and the answers serialised once — the JSON that
is cached is the JSON that is sent, with only `stale` spliced in as it leaves (`sent`): staleness
changes with the clock while the cache key does not. The prediction log is written in batches
off the path (api.services.prediction_log).
"""

from __future__ import annotations

import json
import math
import re
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
from api.services.ab import CHALLENGER, CHAMPION, ChallengerWeights, assign
from api.services.clock import ClockNow, MarketClock
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
    as_of: date = Field(description="the date of the newest bar the forecast is made from")
    horizon: int
    last_close: float
    quantiles: PriceQuantiles
    log_return_quantiles: LogReturnQuantiles
    prob_up: float = Field(ge=0, le=1)
    model: ModelRef
    skill: Skill | None
    stale: bool | None = Field(
        default=None,
        description="`as_of` is older than the last completed session (under a replay: the "
        "replay day); always sent, never cached (it changes with the clock)",
    )


# The cached document's `as_of` (written by `_shape`; spacing allowed for documents stored by
# other writers): read without parsing the whole document.
_AS_OF = re.compile(r'"as_of"\s*:\s*"(\d{4}-\d{2}-\d{2})"')


def sent(document: str, clock: ClockNow) -> str:
    """A cached prediction document as it is sent: with `stale` read off `clock`, spliced in
    before the closing brace (the document stays serialised once)."""
    found = _AS_OF.search(document)
    stale = clock.stale(date.fromisoformat(found[1]) if found else None)
    return f'{document.rstrip()[:-1]},"stale":{"true" if stale else "false"}}}'


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
        clock: MarketClock | None = None,
    ) -> None:
        self._pool = pool
        self._predictor = predictor
        self._cache = cache
        self._log = prediction_log
        self._weights = weights
        self._on_served = on_served
        self._market = MarketDataService(pool)
        # the app's clock where given; else this service's own (one reading per 0.5 s)
        self._clock = clock or MarketClock(pool)

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
        return await self._serve(targets, horizon, family, variant, version)

    async def _serve(
        self,
        targets: list[Target],
        horizon: Horizon,
        family: Family,
        variant: str,
        version: str,
        for_caller: bool = True,
    ) -> list[str]:
        """The JSON documents of `version`'s forecasts: cached ones, then one call for the rest
        (counted as served unless made for no caller: the feed's daily forecasts).

        Cache keys carry the market clock's run: a looping replay forecasts (and logs) each day
        afresh in every pass instead of answering from an earlier pass's cache."""
        run = (await self._clock.now()).run
        keys = [self._key(t.ticker, horizon, family, version, t.as_of, run) for t in targets]
        found = await self._cache.get_raw_many(keys)
        missing = [t for t, hit in zip(targets, found, strict=True) if hit is None]
        if missing:
            fresh = await self._forecast(missing, family, variant, version, run)
            found = [
                hit or fresh[(t.ticker, horizon)] for t, hit in zip(targets, found, strict=True)
            ]
        if self._on_served is not None and for_caller:
            self._on_served(family, version, variant, len(targets), len(targets) - len(missing))
        return [hit for hit in found if hit is not None]

    async def forecast_day(self, tickers: list[str], family: Family) -> int:
        """The feed's forecasts after each session: every instrument of the day by the champion
        and, when one is registered, by the challenger too, so the live A/B test compares the
        two pair by pair (same ticker, same day: a ticker's own volatility cancels out) with no
        client connected. Users are still split by the challenger weight. Tickers with too
        little history are skipped. Returns the forecasts made (all horizons)."""
        if self._predictor is None:
            return 0
        routing = await self._predictor.routing(family)
        if routing.champion is None:
            return 0
        targets = await self._targets(tickers, None)
        variants = [CHAMPION] + ([CHALLENGER] if routing.challenger is not None else [])
        made = 0
        for variant in variants:
            version = routing.version_of(variant)
            assert version is not None
            for start in range(0, len(targets), MAX_BATCH):
                made += await self._forecast_all(
                    targets[start : start + MAX_BATCH], family, variant, version
                )
        return made

    async def _forecast_all(
        self, targets: list[Target], family: Family, variant: str, version: str
    ) -> int:
        """Every horizon of `targets` by `version` (one model call; the later horizons are cache
        hits); when a ticker is too short to forecast, the others one by one."""
        try:
            return sum(
                [
                    len(await self._serve(targets, h, family, variant, version, for_caller=False))
                    for h in HORIZONS
                ]
            )
        except Unprocessable:
            if len(targets) == 1:
                return 0
            return sum([await self._forecast_all([t], family, variant, version) for t in targets])

    async def predict_many(
        self,
        tickers: list[str],
        horizon: Horizon,
        family: Family,
        user_key: str,
        as_of: date | None = None,
    ) -> list[dict[str, Any]]:
        """`predict_json`, parsed and with `stale`: for the sockets, alerts and chat tools that
        read the values."""
        documents = await self.predict_json(tickers, horizon, family, user_key, as_of)
        clock = await self._clock.now()
        parsed = [json.loads(doc) for doc in documents]
        for forecast in parsed:
            forecast["stale"] = clock.stale(date.fromisoformat(forecast["as_of"]))
        return parsed

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

    def _key(
        self, ticker: str, horizon: int, family: str, version: str, as_of: date, run: int
    ) -> str:
        return self._cache.key(ticker, horizon, family, version, as_of, run)

    async def _forecast(
        self, targets: list[Target], family: Family, variant: str, version: str, run: int
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
            (f.ticker, f.horizon): _shape(f, batch, series[f.ticker].closes[-1]).model_dump_json(
                exclude={"stale"}  # added as it is sent (`sent`)
            )
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
                self._key(t, h, family, batch.version, as_of[t], run): doc
                for (t, h), doc in shaped.items()
            }
        )
        return shaped
