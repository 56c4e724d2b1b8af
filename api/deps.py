"""Annotated dependency aliases so routes read like sentences."""

from __future__ import annotations

import hmac
from typing import Annotated

import asyncpg
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from redis.asyncio import Redis

from api.errors import ProblemError
from api.services.market_data import MarketDataService
from api.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_pool(request: Request) -> asyncpg.Pool:
    return request.app.state.pool


def get_redis(request: Request) -> Redis:
    return request.app.state.redis


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
AdminDep = Depends(require_admin)
