"""Annotated dependency aliases so routes read like sentences."""

from __future__ import annotations

import hmac
from typing import Annotated

import asyncpg
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from redis.asyncio import Redis

from api.cache import JsonCache
from api.errors import ProblemError
from api.services.market_data import MarketDataService
from api.services.predictions import PredictionService
from api.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_pool(request: Request) -> asyncpg.Pool:
    return request.app.state.pool


def get_redis(request: Request) -> Redis:
    return request.app.state.redis


def get_predictions(
    pool: Annotated[asyncpg.Pool, Depends(get_pool)],
    redis: Annotated[Redis, Depends(get_redis)],
    request: Request,
) -> PredictionService:
    settings: Settings = request.app.state.settings
    cache = JsonCache(redis, "pred:v1", settings.prediction_cache_ttl_s)
    return PredictionService(pool, request.app.state.predictor, cache)


def caller_key(request: Request) -> str:
    """Who is asking, for sticky A/B assignment: the client id header, else the client address.

    The authenticated user id takes this role once sign-in exists.
    """
    client_id = request.headers.get("x-client-id", "")
    if 8 <= len(client_id) <= 64 and client_id.replace("-", "").isalnum():
        return client_id
    return request.client.host if request.client else "anonymous"


def get_market_data(pool: Annotated[asyncpg.Pool, Depends(get_pool)]) -> MarketDataService:
    return MarketDataService(pool)


_bearer = HTTPBearer(auto_error=False, description="Admin API token (ADMIN_API_TOKEN)")


def require_admin(
    settings: Annotated[Settings, Depends(get_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Admin routes need the configured admin token (user roles arrive with the auth service)."""
    if settings.admin_api_token is None:
        raise ProblemError(403, "admin_disabled", "admin API is disabled: set ADMIN_API_TOKEN")
    expected = settings.admin_api_token.get_secret_value().encode()
    given = (credentials.credentials if credentials else "").encode()
    # compare_digest: the time taken must not reveal how much of the token matched
    if not hmac.compare_digest(given, expected):
        raise ProblemError(401, "unauthorized", "a valid admin bearer token is required")


SettingsDep = Annotated[Settings, Depends(get_settings)]
PoolDep = Annotated[asyncpg.Pool, Depends(get_pool)]
RedisDep = Annotated[Redis, Depends(get_redis)]
MarketDataDep = Annotated[MarketDataService, Depends(get_market_data)]
PredictionsDep = Annotated[PredictionService, Depends(get_predictions)]
CallerKeyDep = Annotated[str, Depends(caller_key)]
AdminDep = Depends(require_admin)
