"""Ray Serve deployments: one per model family, the ensemble, the A/B router and the ingress.

Each family deployment serves its registered `champion` (and `challenger`, when one exists) and
re-reads the MLflow aliases every `alias_poll_s`; a moved alias loads the new version first and
then swaps the reference, so in-flight requests finish on the version they started with.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import structlog
from ray import serve
from ray.serve.handle import DeploymentHandle

from api.db.models import AliasEvent, AliasEventRepository
from api.db.pool import create_pool
from api.predictor import FamilyCatalogue, ForecastBatch, ForecastRequest, ModelUnavailable, Routing
from api.settings import Settings
from serving.local import DbWeights, LocalPredictor

log = structlog.get_logger(__name__)


class AliasAudit:
    """Writes alias switches serving observed (e.g. made in the MLflow UI) to the alias history,
    unless the mover (the CLI, automatic rollback) already recorded that very move."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._pool: asyncpg.Pool | None = None

    async def observed(self, family: str, alias: str, old: str | None, new: str | None) -> None:
        from training.registry import model_name

        if self._pool is None:
            self._pool = await create_pool(self._settings)
        repo = AliasEventRepository(self._pool)
        latest = await repo.history(model_name(family), alias, limit=1)
        if latest and latest[0].to_version == new:
            return
        await repo.record(
            AliasEvent(
                model_name(family),
                alias,
                old,
                new,
                "serving",
                "alias moved outside stockcopilot (e.g. MLflow UI)",
            )
        )
        log.info("alias_switch", family=family, alias=alias, old=old, new=new)


class FamilyForecaster:
    """Serves one family through the same in-process predictor tests and `--no-ray` use."""

    family = "base"

    def __init__(self, settings: Settings) -> None:
        import torch

        from training import registry

        torch.set_num_threads(1)  # see training.fit: one thread is much faster on small nets
        self._predictor = LocalPredictor(
            registry.configure(settings.mlflow_tracking_uri), alias_ttl_s=settings.alias_poll_s
        )
        self._poll_s = settings.alias_poll_s
        self._audit = AliasAudit(settings)
        self._watch = asyncio.get_event_loop().create_task(self._follow_aliases())

    async def _follow_aliases(self) -> None:
        """Load a newly aliased version, then record the switch in the alias history."""
        seen: dict[str, str | None] = {}
        while True:
            try:
                routing = await self._predictor.routing(self.family)
                for alias in ("champion", "challenger"):
                    version = getattr(routing, alias)
                    if version is not None:
                        await self._predictor.preload(self.family, version)
                    if alias in seen and seen[alias] != version:
                        await self._audit.observed(self.family, alias, seen[alias], version)
                    seen[alias] = version
            except Exception as exc:  # a failed poll keeps serving what it has
                log.warning("alias_poll_failed", family=self.family, error=str(exc))
            await asyncio.sleep(self._poll_s)

    async def routing(self) -> Routing:
        return await self._predictor.routing(self.family)

    async def forecast(self, request: ForecastRequest) -> ForecastBatch:
        return await self._predictor.forecast(request)

    async def catalogue(self) -> FamilyCatalogue:
        return await self._predictor.catalogue(self.family)

    async def forecast_with(self, model_uri: str, request: ForecastRequest) -> Any:
        """Predictions of one exact logged model (the ensemble's fitted members)."""
        return await self._predictor.predict_uri(model_uri, request)


@serve.deployment(name="LSTMForecaster")
class LSTMForecaster(FamilyForecaster):
    family = "lstm"


@serve.deployment(name="TransformerForecaster")
class TransformerForecaster(FamilyForecaster):
    family = "transformer"


@serve.deployment(name="HybridForecaster")
class HybridForecaster(FamilyForecaster):
    family = "hybrid"


@serve.deployment(name="EnsembleForecaster")
class EnsembleForecaster(FamilyForecaster):
    """Weights from the registered ensemble; member predictions come from the member deployments."""

    family = "ensemble"

    def __init__(self, settings: Settings, members: dict[str, DeploymentHandle]) -> None:
        super().__init__(settings)
        self._members = members

    async def forecast(self, request: ForecastRequest) -> ForecastBatch:
        return await self._predictor.forecast_ensemble(request, self._member_predictions)

    async def _member_predictions(
        self,
        family: str,
        model_uri: str,
        request: ForecastRequest,
    ) -> Any:
        return await self._members[family].forecast_with.remote(model_uri, request)


@serve.deployment(name="ABRouter")
class ABRouter:
    """Dispatches a request to its family's deployment; answers who serves each family now."""

    def __init__(self, settings: Settings, families: dict[str, DeploymentHandle]) -> None:
        self._families = families
        self._weights = DbWeights(settings)

    async def routing(self, family: str) -> Routing:
        handle = self._family(family)
        routing: Routing = await handle.routing.remote()
        if routing.challenger is None:
            return routing
        weight = await self._weights(family)
        return routing.model_copy(update={"challenger_weight": weight})

    async def forecast(self, request: ForecastRequest) -> ForecastBatch:
        return await self._family(request.family).forecast.remote(request)

    async def catalogue(self, family: str) -> FamilyCatalogue:
        return await self._family(family).catalogue.remote()

    def _family(self, family: str) -> DeploymentHandle:
        if family not in self._families:
            raise ModelUnavailable(f"no deployment serves {family!r}")
        return self._families[family]


class RayPredictor:
    """The API's Predictor over a Ray handle to the A/B router."""

    def __init__(self, router: DeploymentHandle) -> None:
        self._router = router

    async def routing(self, family: str) -> Routing:
        return await self._router.routing.remote(family)

    async def forecast(self, request: ForecastRequest) -> ForecastBatch:
        return await self._router.forecast.remote(request)

    async def catalogue(self, family: str) -> FamilyCatalogue:
        return await self._router.catalogue.remote(family)


@serve.deployment(name="StockCopilotIngress")
@serve.ingress()
class StockCopilotIngress:
    """The FastAPI app from `api.create_app`, with predictions routed into the Ray cluster."""

    def __init__(self, settings: Settings, router: DeploymentHandle) -> None:
        self._settings = settings
        self._router = router

    def __serve_build_asgi_app__(self) -> Any:
        from api.app import create_app
        from api.logging import configure_logging

        configure_logging(self._settings.log_level, self._settings.log_json)
        return create_app(self._settings, RayPredictor(self._router))
