"""Annotated dependency aliases so routes read like sentences.

Every dependency here is `async def`, even those that only read `app.state`: FastAPI runs a plain
`def` dependency in a worker thread, a thread hop per dependency per request.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any

import asyncpg
import structlog
from fastapi import Depends, Query, Request
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from redis.asyncio import Redis

from api.cache import JsonCache
from api.errors import ProblemError, answers
from api.security.access import ADMIN, SESSION, Access, scoped
from api.security.mail import EmailSender
from api.security.ratelimit import Limit
from api.services.auth import AuthService, Principal, unauthorized
from api.services.clock import ClockNow
from api.services.market_data import MarketDataService
from api.services.notifications import Notifier
from api.services.oauth import OAuthService
from api.services.predictions import PredictionService
from api.settings import Settings


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


# A route reaching the database answers 503 `database_unavailable` while it cannot be reached.
@answers(503)
async def get_pool(request: Request) -> asyncpg.Pool:
    return request.app.state.pool


async def get_clock(request: Request) -> ClockNow:
    """The product's "today" (the replay day under a simulated clock) and last session."""
    return await request.app.state.clock.now()


async def get_redis(request: Request) -> Redis:
    return request.app.state.redis


def predictions_of(state: Any) -> PredictionService:
    """The prediction service of an app (its `app.state`): routes, sockets and alerts share it."""
    cache = JsonCache(state.redis, "pred:v1", state.settings.prediction_cache_ttl_s)
    return PredictionService(
        state.pool,
        state.predictor,
        cache,
        state.prediction_log,
        state.challenger_weights,
        state.metrics.forecasts_served,
        clock=state.clock,
    )


async def get_predictions(request: Request) -> PredictionService:
    return predictions_of(request.app.state)


async def caller_key(principal: Annotated[Principal, Depends(current_principal)]) -> str:
    """Who is asking, for sticky A/B assignment: the user (all of a user's keys and sessions
    get the same variant; no header can choose it)."""
    return f"user:{principal.user_id}"


async def get_market_data(pool: Annotated[asyncpg.Pool, Depends(get_pool)]) -> MarketDataService:
    return MarketDataService(pool)


# Both schemes show in the OpenAPI "Authorize" dialog: the password flow for a token, or a key.
_oauth2 = OAuth2PasswordBearer(
    tokenUrl="/api/v1/auth/token", auto_error=False, description="access token (JWT)"
)
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="scoped API key")


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


@answers(503)
async def get_auth(request: Request) -> AuthService:
    state = request.app.state
    return AuthService(state.pool, state.redis, state.settings, state.keyring, state.rate_limiter)


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


def insufficient_scope(scope: str) -> ProblemError:
    return ProblemError(403, "insufficient_scope", f"this API key lacks the {scope!r} scope")


def session_required() -> ProblemError:
    return ProblemError(
        401,
        "session_required",
        "this operation needs a signed-in session (an access token); API keys cannot do it",
        headers={"WWW-Authenticate": "Bearer"},
    )


def _marked(access: Access, dependency: Any) -> Any:
    dependency.access = access  # read by api.security.declarations (start-up check, OpenAPI)
    return Depends(dependency)


@functools.cache
def require(access: Access) -> Any:
    """The dependency enforcing `access` (api.security.access); one per requirement, so FastAPI
    runs it once per request however many places name it. It gives the caller (None when
    public)."""
    if access.level == "public":

        async def public() -> None:
            return None

        return _marked(access, public)
    if access.level == "scope":

        @answers(403)
        async def with_scope(request: Request, principal: PrincipalDep) -> Principal:
            scope = access.scope_for(request.method)
            assert scope is not None
            if not principal.allows(scope):
                raise insufficient_scope(scope)
            return principal

        return _marked(access, with_scope)

    @answers(403) if access.level == "admin" else answers()
    async def signed_in(principal: PrincipalDep) -> Principal:
        if not principal.has_session:
            raise session_required()
        if access.level == "admin" and not principal.is_admin:
            raise ProblemError(403, "forbidden", "administrator role required")
        return principal

    return _marked(access, signed_in)


def require_scope(scope: str, write: str | None = None) -> Any:
    """Access tokens, and API keys holding `scope` (or `write` for unsafe methods)."""
    return require(scoped(scope, write))


IP_BUDGET_FACTOR = 5  # an address may carry several users (an office NAT), so it gets more


def _rate_subjects(
    request: Request, tier: str, principal: Principal | None, per_min: int
) -> list[tuple[Limit, str]]:
    address = f"ip:{client_ip(request)}"
    if principal is None:
        return [(Limit(tier, per_min, 60.0), address)]
    subject = (
        f"key:{principal.api_key_id}"
        if principal.api_key_id is not None
        else f"user:{principal.user_id}"
    )
    return [
        (Limit(tier, per_min, 60.0), subject),
        (Limit(f"{tier}-ip", per_min * IP_BUDGET_FACTOR, 60.0), address),
    ]


async def spend_rate(request: Request, tier: str, checks: list[tuple[Limit, str]]) -> None:
    """Spend one request of each (limit, subject); 429 when any is spent. The tightest one's
    RateLimit-* headers go on whatever response the request gets (api.middleware)."""
    decisions = await request.app.state.rate_limiter.hit_many(checks)
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
    request.state.rate_limit_headers = tightest.headers()


def rate_limited(tier: str) -> Any:
    """A dependency spending one request of `tier`'s budget per client address and, when the
    caller is known, per user (or API key) as well. The `auth` tier counts per address only,
    whatever credentials come with the request: a token must not buy a looser budget for
    guessing passwords."""

    async def spend_auth(request: Request) -> None:
        per_min = request.app.state.settings.rate_limit_auth_per_min
        await spend_rate(request, tier, _rate_subjects(request, tier, None, per_min))

    async def spend(
        request: Request,
        principal: Annotated[Principal | None, Depends(optional_principal)],
    ) -> None:
        per_min = request.app.state.settings.rate_limit_default_per_min
        checks = _rate_subjects(request, tier, principal, per_min)
        await spend_rate(request, tier, checks)

    return Depends(answers(429)(spend_auth if tier == "auth" else spend))


MAX_OFFSET = 1_000_000
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="items to skip (paging)")]
"""A paging offset; bounded, so no number reaches the database it cannot hold."""

SettingsDep = Annotated[Settings, Depends(get_settings)]
PoolDep = Annotated[asyncpg.Pool, Depends(get_pool)]
ClockDep = Annotated[ClockNow, Depends(get_clock)]
RedisDep = Annotated[Redis, Depends(get_redis)]
MarketDataDep = Annotated[MarketDataService, Depends(get_market_data)]
PredictionsDep = Annotated[PredictionService, Depends(get_predictions)]
CallerKeyDep = Annotated[str, Depends(caller_key)]
AuthDep = Annotated[AuthService, Depends(get_auth)]
PrincipalDep = Annotated[Principal, Depends(current_principal)]
SessionPrincipalDep = Annotated[Principal, require(SESSION)]
AdminPrincipalDep = Annotated[Principal, require(ADMIN)]


async def _client_ip(request: Request) -> str | None:
    return client_ip(request)


ClientIpDep = Annotated[str | None, Depends(_client_ip)]


async def get_notifier(request: Request) -> Notifier:
    return Notifier(request.app.state.pool, request.app.state.redis)


NotifierDep = Annotated[Notifier, Depends(get_notifier)]


async def get_email_sender(request: Request) -> EmailSender:
    return request.app.state.email_sender


EmailSenderDep = Annotated[EmailSender, Depends(get_email_sender)]


async def get_oauth(request: Request, auth: AuthDep) -> OAuthService:
    state = request.app.state
    return OAuthService(state.pool, state.redis, state.settings, state.keyring, auth)


OAuthDep = Annotated[OAuthService, Depends(get_oauth)]
