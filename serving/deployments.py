"""Ray Serve deployments: one per model family, the ensemble, the A/B router and the ingress.

Each family deployment serves its registered `champion` (and `challenger`, when one exists) and
re-reads the MLflow aliases every `alias_poll_s`; a moved alias loads the new version first and
then swaps the reference, so in-flight requests finish on the version they started with.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import structlog
from ray import serve
from ray.serve.handle import DeploymentHandle
from redis.asyncio import Redis
from redis.exceptions import RedisError

from api.db.models import AliasEvent, AliasEventRepository
from api.db.pool import create_pool
from api.predictor import FamilyCatalogue, ForecastBatch, ForecastRequest, ModelUnavailable, Routing
from api.settings import Settings
from serving.local import DbWeights, LocalPredictor
from serving.ttl import TtlCache
from training.registry import model_name

log = structlog.get_logger(__name__)


class AliasAudit:
    """Alias switches serving observed (e.g. made in the MLflow UI) and automatic rollbacks, in
    the alias history; rollbacks are also published for the notification stream."""

    CHANNEL = "notifications:models"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._pool: asyncpg.Pool | None = None

    async def _repo(self) -> AliasEventRepository:
        if self._pool is None:
            self._pool = await create_pool(self._settings)
        return AliasEventRepository(self._pool)

    async def observed(self, family: str, alias: str, old: str | None, new: str | None) -> None:
        """Record a move unless its mover (the CLI, a rollback) already recorded it."""
        repo = await self._repo()
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

    async def rollback(
        self, family: str, alias: str, broken: str | None, restored: str | None, reason: str
    ) -> None:
        await self.observed(family, alias, restored, broken)  # the move that failed, if unseen
        repo = await self._repo()
        await repo.record(
            AliasEvent(model_name(family), alias, broken, restored, "auto-rollback", reason)
        )
        event = {
            "type": "model_rollback",
            "family": family,
            "alias": alias,
            "from_version": broken,
            "to_version": restored,
            "reason": reason,
        }
        redis = Redis.from_url(self._settings.redis_url or "")
        try:
            await redis.publish(self.CHANNEL, json.dumps(event))
        except (RedisError, OSError) as exc:  # the audit row is written; the push is best effort
            log.warning("rollback_notification_failed", error=type(exc).__name__)
        finally:
            await redis.aclose()


class FamilyForecaster:
    """Serves one family through the same in-process predictor tests and `--no-ray` use."""

    family = "base"

    def __init__(self, settings: Settings) -> None:
        import torch

        from training import registry

        torch.set_num_threads(1)  # see training.fit: one thread is much faster on small nets
        self._client = registry.configure(settings.mlflow_tracking_uri)
        self._predictor = LocalPredictor(self._client, alias_ttl_s=settings.alias_poll_s)
        self._poll_s = settings.alias_poll_s
        self._audit = AliasAudit(settings)
        self._watch = asyncio.get_event_loop().create_task(self._follow_aliases())

    async def _follow_aliases(self) -> None:
        """Switch to a newly aliased version only once it has loaded; roll back one that fails.

        Requests are answered throughout from the last vetted routing (`pin`), so a broken
        version never receives traffic.
        """
        active: Routing | None = None
        while True:
            try:
                active = await self._vet(active)
            except Exception as exc:  # a failed poll keeps serving what it has
                log.warning("alias_poll_failed", family=self.family, error=str(exc))
            await asyncio.sleep(self._poll_s)

    async def _vet(self, active: Routing | None) -> Routing:
        wanted = await self._predictor.registry_routing(self.family)
        vetted = wanted if active is None else active.model_copy()
        for alias in ("champion", "challenger"):
            new, old = getattr(wanted, alias), getattr(vetted, alias)
            if active is not None and new == getattr(active, alias):
                continue
            try:
                if new is not None:
                    await self._predictor.preload(self.family, new)
            except ModelUnavailable as exc:
                await self._rollback(alias, old, new, str(exc))
                continue
            if active is not None:
                await self._audit.observed(self.family, alias, old, new)
            vetted = vetted.model_copy(update={alias: new})
        vetted = vetted.model_copy(update={"challenger_weight": wanted.challenger_weight})
        self._predictor.pin(vetted)
        return vetted

    async def _rollback(
        self, alias: str, previous: str | None, broken: str | None, why: str
    ) -> None:
        """Point the alias back at the version that was serving, and say so everywhere."""
        from training import registry

        log.error(
            "auto_rollback",
            family=self.family,
            alias=alias,
            broken=broken,
            previous=previous,
            reason=why,
        )
        if previous is not None:
            await asyncio.to_thread(registry.set_alias, self._client, self.family, alias, previous)
        await self._audit.rollback(
            self.family, alias, broken, previous, f"version {broken} failed to load: {why}"[:500]
        )

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
    """The API's Predictor over a Ray handle to the A/B router.

    The routing table is kept for `routing_ttl_s` in the ingress, so a cached prediction is
    answered without entering the Ray cluster at all.
    """

    def __init__(self, router: DeploymentHandle, routing_ttl_s: float = 2.0) -> None:
        self._router = router
        self._routing: TtlCache[str, Routing] = TtlCache(routing_ttl_s)

    async def routing(self, family: str) -> Routing:
        cached = self._routing.get(family)
        if cached is not None:
            return cached
        return self._routing.put(family, await self._router.routing.remote(family))

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
