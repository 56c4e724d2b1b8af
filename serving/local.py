"""In-process predictor: the registered MLflow models, loaded in this process (no Ray).

Used by tests and `stockcopilot up --no-ray`; the Ray Serve predictor serves the same bundles.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pandas as pd
from mlflow import MlflowClient

from api.predictor import (
    Forecast,
    ForecastBatch,
    ForecastRequest,
    HorizonSkill,
    ModelUnavailable,
    Routing,
    SeriesInput,
)
from api.services.ab import CHALLENGER, CHAMPION
from features.bars import canonical
from training import registry
from training.bundle import EnsembleBundle, ForecastBundle

Bundle = ForecastBundle | EnsembleBundle
WeightSource = Callable[[str], float]


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
            as_of=r.date.date(),
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
        challenger_weight: WeightSource = lambda _: 0.0,
        alias_ttl_s: float = 30.0,
    ) -> None:
        self._client = client
        self._weight = challenger_weight
        self._ttl = alias_ttl_s
        self._routing: dict[str, tuple[float, Routing]] = {}
        self._bundles: dict[str, Bundle] = {}
        self._lock = asyncio.Lock()

    async def routing(self, family: str) -> Routing:
        cached = self._routing.get(family)
        if cached and time.monotonic() - cached[0] < self._ttl:
            return cached[1]
        champion, challenger = await asyncio.gather(
            asyncio.to_thread(registry.alias_version, self._client, family, CHAMPION),
            asyncio.to_thread(registry.alias_version, self._client, family, CHALLENGER),
        )
        routing = Routing(
            family=family,
            champion=champion,
            challenger=challenger,
            challenger_weight=self._weight(family) if challenger else 0.0,
        )
        self._routing[family] = (time.monotonic(), routing)
        return routing

    async def _bundle(self, uri: str) -> Bundle:
        async with self._lock:  # one load per model, however many requests arrive at once
            if uri not in self._bundles:
                try:
                    self._bundles[uri] = await asyncio.to_thread(registry.load_bundle, uri)
                except Exception as exc:  # MLflow/IO errors: this model cannot serve
                    raise ModelUnavailable(f"{uri} failed to load: {exc}") from exc
            return self._bundles[uri]

    async def _member_predictions(
        self,
        bundle: EnsembleBundle,
        bars: pd.DataFrame,
    ) -> dict[str, pd.DataFrame]:
        """Each member as the ensemble was fitted with it (its exact logged model)."""
        out = {}
        for member in bundle.families:
            member_bundle = await self._bundle(bundle.members[member]["model_uri"])
            out[member] = await asyncio.to_thread(member_bundle.predict_bars, bars)
        return out

    async def forecast(self, request: ForecastRequest) -> ForecastBatch:
        routing = await self.routing(request.family)
        version = routing.challenger if request.variant == CHALLENGER else routing.champion
        if version is None:
            raise ModelUnavailable(f"no {request.variant} is registered for {request.family}")
        bundle = await self._bundle(f"models:/{registry.model_name(request.family)}/{version}")
        bars = series_to_bars(request.series)
        if isinstance(bundle, EnsembleBundle):
            predictions = bundle.combine(await self._member_predictions(bundle, bars))
        else:
            predictions = await asyncio.to_thread(bundle.predict_bars, bars)
        return to_batch(
            request.family, version, request.variant, predictions, bundle.card.get("skill", {})
        )
