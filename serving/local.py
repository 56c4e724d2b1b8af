"""In-process predictor: the registered MLflow models, loaded in this process.

Tests and `stockcopilot up --no-ray` use it directly; each Ray Serve model deployment wraps one
(see serving.deployments), so both paths run the same code on the same bundles.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pandas as pd
from mlflow import MlflowClient

from api.db.ab import challenger_weight
from api.db.pool import create_pool
from api.predictor import (
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
from api.services.ab import CHALLENGER, CHAMPION
from api.settings import Settings
from features.bars import canonical
from serving.ttl import TtlCache
from training import registry
from training.bundle import EnsembleBundle, ForecastBundle

Bundle = ForecastBundle | EnsembleBundle
WeightSource = Callable[[str], Awaitable[float]]
# (member family, exact model URI, request) -> prediction records
MemberPredictions = Callable[[str, str, ForecastRequest], Awaitable[list[dict[str, Any]]]]


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


def series_to_bars(series: list[SeriesInput]) -> pd.DataFrame:
    """Plain closes -> the canonical long frame bundles predict from."""
    frames = [
        pd.DataFrame({"ticker": s.ticker, "date": pd.to_datetime(s.dates), "close": s.closes})
        for s in series
    ]
    return canonical(pd.concat(frames, ignore_index=True).assign(source="request"))


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
        self._lock = asyncio.Lock()

    def pin(self, routing: Routing) -> None:
        """Serve exactly these versions until the next pin (a deployment that vets new versions
        before switching pins what it has vetted; the alias TTL no longer applies)."""
        self._routing.pin(routing.family, routing)

    async def registry_routing(self, family: str) -> Routing:
        """The aliases as the registry has them right now (no cache)."""
        self._routing.drop(family)
        return await self.routing(family)

    async def routing(self, family: str) -> Routing:
        cached = self._routing.get(family)
        if cached is not None:
            return cached
        champion, challenger = await asyncio.gather(
            asyncio.to_thread(registry.alias_version, self._client, family, CHAMPION),
            asyncio.to_thread(registry.alias_version, self._client, family, CHALLENGER),
        )
        weight = await self._weight(family) if challenger else 0.0
        routing = Routing(
            family=family, champion=champion, challenger=challenger, challenger_weight=weight
        )
        return self._routing.put(family, routing)

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
        if not isinstance(bundle, ForecastBundle):
            raise ModelUnavailable(f"{model_uri} is not a single-family forecaster")
        frame = await asyncio.to_thread(bundle.predict_bars, series_to_bars(request.series))
        return frame.to_dict("records")

    async def _resolve(self, request: ForecastRequest) -> tuple[str, Bundle]:
        routing = await self.routing(request.family)
        version = routing.challenger if request.variant == CHALLENGER else routing.champion
        if version is None:
            raise ModelUnavailable(f"no {request.variant} is registered for {request.family}")
        uri = f"models:/{registry.model_name(request.family)}/{version}"
        return version, await self._bundle(uri)

    async def forecast(self, request: ForecastRequest) -> ForecastBatch:
        if request.family == "ensemble":
            return await self.forecast_ensemble(request, self._local_member)
        version, bundle = await self._resolve(request)
        assert isinstance(bundle, ForecastBundle)
        predictions = await asyncio.to_thread(bundle.predict_bars, series_to_bars(request.series))
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

    async def forecast_ensemble(
        self, request: ForecastRequest, members: MemberPredictions
    ) -> ForecastBatch:
        """Each member exactly as the ensemble was fitted with it, combined with its weights."""
        version, bundle = await self._resolve(request)
        if not isinstance(bundle, EnsembleBundle):
            raise ModelUnavailable(f"ensemble version {version} is not an ensemble bundle")
        records = await asyncio.gather(
            *(members(f, bundle.members[f]["model_uri"], request) for f in bundle.families)
        )
        frames = {f: pd.DataFrame(r) for f, r in zip(bundle.families, records, strict=True)}
        return to_batch(
            "ensemble",
            version,
            request.variant,
            bundle.combine(frames),
            bundle.card.get("skill", {}),
        )
