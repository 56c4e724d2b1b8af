"""In-process predictor: the registered MLflow models, loaded in this process.

Tests and `stockcopilot up --no-ray` use it directly; each Ray Serve model deployment wraps one
(see serving.replicas), so both paths run the same code on the same bundles.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pandas as pd
import structlog
from mlflow import MlflowClient

from api.cache import TtlCache
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
from training import registry
from training.bundle import Bundle, ClassicalBundle, EnsembleBundle, ForecastBundle

# (member family, exact model URI, request) -> prediction records
MemberPredictions = Callable[[str, str, ForecastRequest], Awaitable[list[dict[str, Any]]]]
MAX_BUNDLES = 8  # loaded models kept per process: champion, challenger, fallback, members
log = structlog.get_logger(__name__)


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
    """Prediction rows -> the response type, column-wise (row-wise pandas access cost more than
    the model's forward pass)."""

    def column(name: str, dtype: str | None = None) -> list[Any]:
        return predictions[name].to_numpy(dtype).tolist()  # numpy: ~10x cheaper than astype

    columns = zip(
        column("ticker"),
        predictions["date"].to_numpy("datetime64[D]").astype(object).tolist(),
        column("horizon", "int64"),
        column("q10", "float64"),
        column("q50", "float64"),
        column("q90", "float64"),
        strict=True,
    )
    forecasts = [
        Forecast.model_construct(ticker=t, as_of=d, horizon=h, q10=q10, q50=q50, q90=q90)
        for t, d, h, q10, q50, q90 in columns
    ]
    return ForecastBatch(
        family=family,
        version=version,
        variant=variant,
        forecasts=forecasts,
        skill={int(h): HorizonSkill(**v) for h, v in skill.items()},
    )


class LocalPredictor:
    """Loads registered bundles on demand (at most `max_bundles`, least recently used out);
    re-reads aliases every `alias_ttl_s` seconds so an alias moved in the MLflow UI is followed.

    Each model loads under its own lock: a version being loaded never blocks requests to the
    versions already loaded.
    """

    def __init__(
        self, client: MlflowClient, alias_ttl_s: float = 30.0, max_bundles: int = MAX_BUNDLES
    ) -> None:
        self._client = client
        self._routing: TtlCache[str, Routing] = TtlCache(alias_ttl_s)
        self._bundles: OrderedDict[str, Bundle] = OrderedDict()
        self._loading: dict[str, asyncio.Lock] = {}
        self._max_bundles = max_bundles
        self._shadows: dict[str, str] = {}

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
        return Routing(family=family, champion=champion, challenger=challenger)

    async def routing(self, family: str) -> Routing:
        return await self._routing.get_or_load(family, lambda: self.registry_routing(family))

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
        found = self._bundles.get(uri)
        if found is not None:  # the request path: no lock, no await
            self._bundles.move_to_end(uri)
            return found
        lock = self._loading.setdefault(uri, asyncio.Lock())
        async with lock:  # one load per model, however many requests for it arrive at once
            if uri not in self._bundles:
                try:
                    bundle = await asyncio.to_thread(registry.load_bundle, uri)
                except Exception as exc:  # MLflow/IO errors: this model cannot serve
                    raise ModelUnavailable(f"{uri} failed to load: {exc}") from exc
                self._bundles[uri] = bundle
                while len(self._bundles) > self._max_bundles:
                    evicted, _ = self._bundles.popitem(last=False)
                    log.info("model_evicted", model_uri=evicted)
            self._loading.pop(uri, None)
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

    def shadowing(self, family: str) -> str | None:
        """The version scored silently beside `family`'s champion, if any."""
        return self._shadows.get(family)

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
        """Exactly `version`'s forecast, else the request's version, else what routes to its
        variant now; ensemble members come from `members` (the member deployments under Ray)
        or are computed here."""
        version = version or request.version
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
