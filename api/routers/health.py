"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import PoolDep, RedisDep, SettingsDep, require
from api.schemas import Health, Readiness
from api.security.access import PUBLIC
from api.services.health import readiness

router = APIRouter(tags=["health"], dependencies=[require(PUBLIC)])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(pool: PoolDep, redis: RedisDep, settings: SettingsDep) -> JSONResponse:
    """Ready when Postgres answers (503 otherwise). Without Redis the API still serves, with
    caching and rate limits per replica: `degraded`, still 200, so a Redis outage never takes
    every replica out of a load balancer at once. Stale or failing market data is `degraded`
    too, with the feed's state under `feed`."""
    body = await readiness(pool, redis, settings.feed_mode)
    return JSONResponse(
        body.model_dump(mode="json"), status_code=503 if body.status == "unavailable" else 200
    )
