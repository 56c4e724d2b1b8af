"""In-process predictor: the registered MLflow models, loaded in this process.

Tests and `stockcopilot up --no-ray` use it directly; each Ray Serve model deployment wraps one
(see serving.deployments), so both paths run the same code on the same bundles.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import numpy as np
import pandas as pd
import structlog
from mlflow import MlflowClient

from api.db.ab import challenger_weight
from api.db.pool import create_pool
from api.settings import Settings
from contracts import (
    CHALLENGER,
    CHAMPION,
    MARKET_TICKER,
    FamilyCatalogue,
    Forecast,
    ForecastBatch,
    ForecastRequest,
    HorizonSkill,
    ModelUnavailable,
    ModelVersion,
    Routing,
    SeriesInput,
)
from serving.ttl import TtlCache
from training import registry
from training.bundle import Bundle, ClassicalBundle, EnsembleBundle, ForecastBundle

WeightSource = Callable[[str], Awaitable[float]]
# (member family, exact model URI, request) -> prediction records
MemberPredictions = Callable[[str, str, ForecastRequest], Awaitable[list[dict[str, Any]]]]
log = structlog.get_logger(__name__)


async def no_challenger_traffic(_: str) -> float:
    return 0.0


class DbWeights:
    """Challenger traffic shares from Postgres (`stockcopilot ab set`), cached a few seconds so
    a changed weight applies without a restart but costs no query per request."""

    def __init__(self, settings: Settings, ttl_s: float = 5.0) -> None:
        self._settings = settings
        self._pool: asyncpg.Pool | None = None
        self._cache: TtlCache[str, float] = TtlCache(ttl_s)

    async def __call__(self, family: str) -> float:
        cached = self._cache.get(family)
        if cached is not None:
            return cached
        if self._pool is None:
            self._pool = await create_pool(self._settings)
        return self._cache.put(family, await challenger_weight(self._pool, family))


def series_to_closes(series: list[SeriesInput]) -> dict[str, pd.Series]:
    """Plain closes -> one date-indexed close series per ticker, as bundles predict from.

    Built directly rather than through the canonical bar frame: on one ticker that frame cost
    more than the network's forward pass.
    """
    closes = {}
    for s in series:
        index = pd.DatetimeIndex(np.asarray(s.days, "datetime64[D]").astype("datetime64[ns]"))
        if len(index) != len(s.closes) or not (index.is_monotonic_increasing and index.is_unique):
            raise ValueError(f"{s.ticker}: dates must be unique, ascending and one per close")
        closes[s.ticker] = pd.Series(s.closes, index=index, name="close", dtype="float64")
    return closes


def _sectors(series: list[SeriesInput]) -> dict[str, str | None]:
    return {s.ticker: s.sector for s in series if s.sector is not None}


def _predict(bundle: ForecastBundle | ClassicalBundle, request: ForecastRequest) -> pd.DataFrame:
    """One single-family bundle's forecasts for the request's series."""
    closes = series_to_closes(request.series)
    if isinstance(bundle, ClassicalBundle):
        return bundle.predict_closes(closes)
    market = None if request.market is None else series_to_closes([request.market])
    if market is None and bundle.feature_config.needs_market and MARKET_TICKER not in closes:
        raise ModelUnavailable(f"this model needs {MARKET_TICKER}'s closes in the request")
    return bundle.predict_closes(
        closes, _sectors(request.series), None if market is None else next(iter(market.values()))
    )


def to_batch(
    family: str, version: str, variant: str, predictions: pd.DataFrame, skill: dict
) -> ForecastBatch:
    forecasts = [
        Forecast(
            ticker=r.ticker,
            as_of=pd.Timestamp(r.date).date(),
            horizon=int(r.horizon),
            q10=float(r.q10),
            q50=float(r.q50),
            q90=float(r.q90),
        )
        for r in predictions.itertuples(index=False)
    ]
    return ForecastBatch(
        family=family,
        version=version,
        variant=variant,
        forecasts=forecasts,
        skill={int(h): HorizonSkill(**v) for h, v in skill.items()},
    )


class LocalPredictor:
    """Loads champion/challenger bundles from the registry on demand; re-reads aliases every
    `alias_ttl_s` seconds so an alias moved in the MLflow UI is followed."""

    def __init__(
        self,
        client: MlflowClient,
        weight: WeightSource = no_challenger_traffic,
        alias_ttl_s: float = 30.0,
    ) -> None:
        self._client = client
        self._weight = weight
        self._routing: TtlCache[str, Routing] = TtlCache(alias_ttl_s)
        self._bundles: dict[str, Bundle] = {}
        self._shadows: dict[str, str] = {}
        self._lock = asyncio.Lock()

    def pin(self, routing: Routing) -> None:
        """Serve exactly these versions until the next pin (a deployment that vets new versions
        before switching pins what it has vetted; the alias TTL no longer applies)."""
        self._routing.pin(routing.family, routing)

    async def registry_routing(self, family: str) -> Routing:
        """The aliases as the registry has them right now; what is served is left unchanged
        (a pinned routing stays pinned while the caller vets these versions)."""
        champion, challenger = await asyncio.gather(
            asyncio.to_thread(registry.alias_version, self._client, family, CHAMPION),
            asyncio.to_thread(registry.alias_version, self._client, family, CHALLENGER),
        )
        weight = await self._weight(family) if challenger else 0.0
        return Routing(
            family=family, champion=champion, challenger=challenger, challenger_weight=weight
        )

    async def routing(self, family: str) -> Routing:
        cached = self._routing.get(family)
        if cached is not None:
            return cached
        return self._routing.put(family, await self.registry_routing(family))

    async def catalogue(self, family: str) -> FamilyCatalogue:
        """Registered versions with aliases and the headline metrics of their training run."""
        found = await asyncio.to_thread(registry.versions, self._client, family)
        return FamilyCatalogue(
            family=family,
            versions=[
                ModelVersion(
                    version=v.version,
                    aliases=list(v.aliases),
                    metrics={
                        k: float(x)
                        for k, x in v.metrics.items()
                        if "." in k and not k.startswith(("fold", "all."))
                    },
                )
                for v in found
            ],
        )

    async def _bundle(self, uri: str) -> Bundle:
        async with self._lock:  # one load per model, however many requests arrive at once
            if uri not in self._bundles:
                try:
                    self._bundles[uri] = await asyncio.to_thread(registry.load_bundle, uri)
                except Exception as exc:  # MLflow/IO errors: this model cannot serve
                    raise ModelUnavailable(f"{uri} failed to load: {exc}") from exc
            return self._bundles[uri]

    async def preload(self, family: str, version: str) -> None:
        await self._bundle(f"models:/{registry.model_name(family)}/{version}")

    async def predict_uri(self, model_uri: str, request: ForecastRequest) -> list[dict[str, Any]]:
        """Prediction records of one exact logged model (an ensemble member)."""
        bundle = await self._bundle(model_uri)
        if isinstance(bundle, EnsembleBundle):
            raise ModelUnavailable(f"{model_uri} is not a single-family forecaster")
        frame = await asyncio.to_thread(_predict, bundle, request)
        return frame.to_dict("records")

    def shadow(self, family: str, version: str | None) -> None:
        """Also score `version` on every champion request of `family` (None stops it); the
        result rides along as `ForecastBatch.shadow` for the live comparison."""
        if version is None:
            self._shadows.pop(family, None)
        else:
            self._shadows[family] = version

    async def forecast(
        self,
        request: ForecastRequest,
        members: MemberPredictions | None = None,
        version: str | None = None,
    ) -> ForecastBatch:
        """The routed version's forecast (or exactly `version`'s); ensemble members come from
        `members` (the member deployments under Ray) or are computed here."""
        if version is None:
            version = (await self.routing(request.family)).version_of(request.variant)
        if version is None:
            raise ModelUnavailable(f"no {request.variant} is registered for {request.family}")
        shadow = self._shadows.get(request.family) if request.variant == CHAMPION else None
        if shadow is None or shadow == version:
            return await self._forecast_version(request, version, members)
        batch, ghost = await asyncio.gather(
            self._forecast_version(request, version, members),
            self._forecast_version(request, shadow, members),
            return_exceptions=True,
        )
        if isinstance(batch, BaseException):
            raise batch
        if isinstance(ghost, BaseException):  # the shadow never costs the user an answer
            log.warning("shadow_forecast_failed", family=request.family, error=str(ghost))
            return batch
        return batch.model_copy(update={"shadow": ghost})

    async def _forecast_version(
        self, request: ForecastRequest, version: str, members: MemberPredictions | None
    ) -> ForecastBatch:
        bundle = await self._bundle(f"models:/{registry.model_name(request.family)}/{version}")
        if isinstance(bundle, EnsembleBundle):
            # each member exactly as the ensemble was fitted with it, combined with its weights
            member = members or self._local_member
            records = await asyncio.gather(
                *(member(f, bundle.members[f]["model_uri"], request) for f in bundle.families)
            )
            frames = {f: pd.DataFrame(r) for f, r in zip(bundle.families, records, strict=True)}
            predictions = bundle.combine(frames)
        else:
            predictions = await asyncio.to_thread(_predict, bundle, request)
        return to_batch(
            request.family, version, request.variant, predictions, bundle.card.get("skill", {})
        )

    async def _local_member(
        self,
        _: str,
        model_uri: str,
        request: ForecastRequest,
    ) -> list[dict[str, Any]]:
        return await self.predict_uri(model_uri, request)
