"""The router's logic, in the ingress: which deployment serves a family, and which versions.

There is no router deployment between the API and the models: the ingress holds a handle to
every family's deployment and calls it directly. The routing table (the versions each family's
replicas have vetted) is read from the family's deployment at most once every `routing_ttl_s`,
so a cached prediction is answered without entering the Ray cluster at all. The API chooses the
variant (with the challenger's traffic share it reads itself) and sends the chosen version
in the request; the replica serves exactly it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle

from api.cache import TtlCache
from contracts import FamilyCatalogue, ForecastBatch, ForecastRequest, ModelUnavailable, Routing

log = structlog.get_logger(__name__)


class RayPredictor:
    """The API's `Predictor` over Ray handles to the family deployments."""

    def __init__(self, families: dict[str, DeploymentHandle], routing_ttl_s: float = 2.0) -> None:
        self._families = families
        self._routing: TtlCache[str, Routing] = TtlCache(routing_ttl_s)

    async def routing(self, family: str) -> Routing:
        return await self._routing.get_or_load(
            family, lambda: self._call(family, lambda h: h.routing.remote())
        )

    async def forecast(self, request: ForecastRequest) -> ForecastBatch:
        return await self._call(request.family, lambda h: h.forecast.remote(request))

    async def catalogue(self, family: str) -> FamilyCatalogue:
        return await self._call(family, lambda h: h.catalogue.remote())

    async def _call[T](self, family: str, call: Callable[[DeploymentHandle], Awaitable[T]]) -> T:
        """One call to the family's deployment; when the replica that took it dies (or an
        ensemble's member replica does), once more: these calls only read, and Serve routes
        the retry to a live replica. A second failure is "model unavailable" (503), not 500."""
        handle = self._family(family)
        try:
            return await call(handle)
        except RayActorError as first:
            log.warning("replica_lost_retrying", family=family, error=type(first).__name__)
            try:
                return await call(handle)
            except RayActorError as second:
                raise ModelUnavailable(
                    f"{family}: its replica stopped while answering; Serve is replacing it"
                ) from second

    def _family(self, family: str) -> DeploymentHandle:
        if family not in self._families:
            raise ModelUnavailable(f"no deployment serves {family!r}")
        return self._families[family]
