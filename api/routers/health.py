"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import PoolDep, RedisDep, require
from api.schemas import Health, Readiness
from api.security.access import PUBLIC

router = APIRouter(tags=["health"], dependencies=[require(PUBLIC)])
CHECK_TIMEOUT_S = 2.0


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(pool: PoolDep, redis: RedisDep) -> JSONResponse:
    """Ready when Postgres answers (503 otherwise). Without Redis the API still serves, with
    caching and rate limits per replica: `degraded`, still 200, so a Redis outage never takes
    every replica out of a load balancer at once."""
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(pool.fetchval("SELECT 1"), CHECK_TIMEOUT_S)
        checks["postgres"] = "ok"
    except Exception as exc:  # any failure means "not ready"; the type is reported
        checks["postgres"] = f"error: {type(exc).__name__}"
    try:
        await asyncio.wait_for(redis.ping(), CHECK_TIMEOUT_S)
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"error: {type(exc).__name__}"
    if checks["postgres"] != "ok":
        status = "unavailable"
    else:
        status = "ready" if checks["redis"] == "ok" else "degraded"
    body = Readiness(status=status, checks=checks)
    return JSONResponse(body.model_dump(), status_code=503 if status == "unavailable" else 200)
