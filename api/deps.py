"""Annotated dependency aliases so routes read like sentences."""

from __future__ import annotations

from typing import Annotated, Any

import asyncpg
import structlog
from fastapi import Depends, Request, Response
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from redis.asyncio import Redis

from api.cache import JsonCache
from api.errors import ProblemError, answers
from api.security.mail import EmailSender
from api.security.ratelimit import Limit
from api.services.alerts import Notifier
from api.services.auth import AuthService, Principal, unauthorized
from api.services.market_data import MarketDataService
from api.services.oauth import OAuthService
from api.services.predictions import PredictionService
from api.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


# A route reaching the database answers 503 `database_unavailable` while it cannot be reached.
@answers(503)
def get_pool(request: Request) -> asyncpg.Pool:
    return request.app.state.pool


def get_redis(request: Request) -> Redis:
    return request.app.state.redis


def predictions_of(state: Any) -> PredictionService:
    """The prediction service of an app (its `app.state`): routes, sockets and alerts share it."""
    cache = JsonCache(state.redis, "pred:v1", state.settings.prediction_cache_ttl_s)
    return PredictionService(state.pool, state.predictor, cache, state.metrics.forecasts_served)


def get_predictions(request: Request) -> PredictionService:
    return predictions_of(request.app.state)


async def caller_key(principal: Annotated[Principal, Depends(current_principal)]) -> str:
    """Who is asking, for sticky A/B assignment: the user (all of a user's keys and sessions
    get the same variant; no header can choose it)."""
    return f"user:{principal.user_id}"


def get_market_data(pool: Annotated[asyncpg.Pool, Depends(get_pool)]) -> MarketDataService:
    return MarketDataService(pool)


# Both schemes show in the OpenAPI "Authorize" dialog: the password flow for a token, or a key.
_oauth2 = OAuth2PasswordBearer(
    tokenUrl="/api/v1/auth/token", auto_error=False, description="access token (JWT)"
)
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="scoped API key")


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


@answers(503)
def get_auth(request: Request) -> AuthService:
    state = request.app.state
    return AuthService(state.pool, state.redis, state.settings, state.keyring)


@answers(401)
async def optional_principal(
    auth: Annotated[AuthService, Depends(get_auth)],
    token: Annotated[str | None, Depends(_oauth2)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> Principal | None:
    """The caller if credentials came with the request (invalid ones are refused, never
    ignored), else None."""
    principal = None
    if token:
        principal = await auth.principal_from_token(token)
    elif api_key:
        principal = await auth.principal_from_api_key(api_key)
    if principal is not None:  # logs name the caller by a keyed pseudonym, never the id
        structlog.contextvars.bind_contextvars(user=auth.keyring.pseudonym(principal.user_id))
    return principal


@answers(401)
async def current_principal(
    principal: Annotated[Principal | None, Depends(optional_principal)],
) -> Principal:
    if principal is None:
        raise unauthorized()
    return principal


def require_scope(scope: str) -> Any:
    """A dependency admitting access tokens and API keys that carry `scope`."""

    @answers(403)
    async def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if not principal.allows(scope):
            raise ProblemError(403, "insufficient_scope", f"this API key lacks the {scope!r} scope")
        return principal

    return Depends(check)


@answers(403)
async def require_admin(
    principal: Annotated[Principal, Depends(current_principal)],
) -> Principal:
    if not principal.is_admin:
        raise ProblemError(403, "forbidden", "administrator role required")
    return principal


IP_BUDGET_FACTOR = 5  # an address may carry several users (an office NAT), so it gets more


def rate_limited(tier: str) -> Any:
    """A dependency spending one request of `tier`'s budget per client address and, when the
    caller is known, per user (or API key) as well. Sets RateLimit-* headers for the tighter
    of the two; 429 when either is spent."""

    @answers(429)
    async def spend(
        request: Request,
        response: Response,
        principal: Annotated[Principal | None, Depends(optional_principal)],
    ) -> None:
        settings: Settings = request.app.state.settings
        limiter = request.app.state.rate_limiter
        per_min = (
            settings.rate_limit_auth_per_min
            if tier == "auth"
            else settings.rate_limit_default_per_min
        )
        address = f"ip:{client_ip(request)}"
        if principal is None:
            checks = [(Limit(tier, per_min, 60.0), address)]
        else:
            subject = (
                f"key:{principal.api_key_id}"
                if principal.api_key_id is not None
                else f"user:{principal.user_id}"
            )
            checks = [
                (Limit(tier, per_min, 60.0), subject),
                (Limit(f"{tier}-ip", per_min * IP_BUDGET_FACTOR, 60.0), address),
            ]
        decisions = [await limiter.hit(limit, key) for limit, key in checks]
        refused = [d for d in decisions if not d.allowed]
        tightest = min(refused or decisions, key=lambda d: (d.remaining, -d.retry_after_s))
        if refused:
            request.app.state.metrics.rate_limited.labels(tier).inc()
            raise ProblemError(
                429,
                "rate_limited",
                f"rate limit of {tightest.limit.limit} requests per minute reached; retry later",
                headers=tightest.headers(),
            )
        request.state.rate_limit_headers = tightest.headers()  # for error responses too
        response.headers.update(tightest.headers())

    return Depends(spend)


SettingsDep = Annotated[Settings, Depends(get_settings)]
PoolDep = Annotated[asyncpg.Pool, Depends(get_pool)]
RedisDep = Annotated[Redis, Depends(get_redis)]
MarketDataDep = Annotated[MarketDataService, Depends(get_market_data)]
PredictionsDep = Annotated[PredictionService, Depends(get_predictions)]
CallerKeyDep = Annotated[str, Depends(caller_key)]
AdminDep = Depends(require_admin)
AuthDep = Annotated[AuthService, Depends(get_auth)]
PrincipalDep = Annotated[Principal, Depends(current_principal)]
AdminPrincipalDep = Annotated[Principal, Depends(require_admin)]
ClientIpDep = Annotated[str | None, Depends(client_ip)]


def get_notifier(request: Request) -> Notifier:
    return Notifier(request.app.state.pool, request.app.state.redis)


NotifierDep = Annotated[Notifier, Depends(get_notifier)]


def get_email_sender(request: Request) -> EmailSender:
    return request.app.state.email_sender


EmailSenderDep = Annotated[EmailSender, Depends(get_email_sender)]


def get_oauth(request: Request, auth: AuthDep) -> OAuthService:
    state = request.app.state
    return OAuthService(state.pool, state.redis, state.settings, state.keyring, auth)


OAuthDep = Annotated[OAuthService, Depends(get_oauth)]
