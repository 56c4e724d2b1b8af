"""The router's logic, in the ingress: which deployment serves a family, and which versions.

There is no router deployment between the API and the models: the ingress holds a handle to
every family's deployment and calls it directly. The routing table (the versions each family's
replicas have vetted) is read from the family's deployment at most once every `routing_ttl_s`,
so a cached prediction is answered without entering the Ray cluster at all. The API chooses the
variant (with the challenger's traffic share it reads itself) and sends the chosen version
in the request; the replica serves exactly it.
"""

from __future__ import annotations

from ray.serve.handle import DeploymentHandle

from api.cache import TtlCache
from contracts import FamilyCatalogue, ForecastBatch, ForecastRequest, ModelUnavailable, Routing


class RayPredictor:
    """The API's `Predictor` over Ray handles to the family deployments."""

    def __init__(self, families: dict[str, DeploymentHandle], routing_ttl_s: float = 2.0) -> None:
        self._families = families
        self._routing: TtlCache[str, Routing] = TtlCache(routing_ttl_s)

    async def routing(self, family: str) -> Routing:
        return await self._routing.get_or_load(
            family, lambda: self._family(family).routing.remote()
        )

    async def forecast(self, request: ForecastRequest) -> ForecastBatch:
        return await self._family(request.family).forecast.remote(request)

    async def catalogue(self, family: str) -> FamilyCatalogue:
        return await self._family(family).catalogue.remote()

    def _family(self, family: str) -> DeploymentHandle:
        if family not in self._families:
            raise ModelUnavailable(f"no deployment serves {family!r}")
        return self._families[family]
