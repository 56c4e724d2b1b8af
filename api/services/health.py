"""Readiness: whether this replica can serve, from what its backing services answer."""

from __future__ import annotations

import asyncio
from typing import Literal

import asyncpg
from redis.asyncio import Redis

from api.db.pool import ping
from api.schemas import Readiness

CHECK_TIMEOUT_S = 2.0


async def readiness(pool: asyncpg.Pool, redis: Redis) -> Readiness:
    """Ready when Postgres answers, `unavailable` otherwise; `degraded` when only Redis does
    not (the API still serves, with caching and rate limits per replica)."""
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(ping(pool), CHECK_TIMEOUT_S)
        checks["postgres"] = "ok"
    except Exception as exc:  # any failure means "not ready"; the type is reported
        checks["postgres"] = f"error: {type(exc).__name__}"
    try:
        await asyncio.wait_for(redis.ping(), CHECK_TIMEOUT_S)
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"error: {type(exc).__name__}"
    status: Literal["ready", "degraded", "unavailable"] = "unavailable"
    if checks["postgres"] == "ok":
        status = "ready" if checks["redis"] == "ok" else "degraded"
    return Readiness(status=status, checks=checks)
