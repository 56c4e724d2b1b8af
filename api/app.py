"""The FastAPI application factory. Nothing happens at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from redis.asyncio import Redis

from api.db.pool import create_pool
from api.deps import rate_limited
from api.errors import install_error_handlers
from api.middleware import RequestContextMiddleware, SecurityHeadersMiddleware
from api.openapi_examples import attach as attach_examples
from api.predictor import Predictor
from api.routers import (
    admin,
    analysis,
    auth,
    health,
    market,
    models,
    portfolio,
    predictions,
    stocks,
    users,
)
from api.security.crypto import Keyring
from api.security.mail import LogEmailSender
from api.security.ratelimit import RateLimiter
from api.settings import Settings


def create_app(settings: Settings, predictor: Predictor | None = None) -> FastAPI:
    """Build the API. `settings` must carry concrete database and Redis URLs."""

    keyring = Keyring.from_settings(settings)  # refuses development keys in production

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await create_pool(settings)
        app.state.redis = Redis.from_url(settings.redis_url or "", decode_responses=True)
        app.state.rate_limiter = RateLimiter(app.state.redis)
        try:
            yield
        finally:
            await app.state.redis.aclose()
            await app.state.pool.close()

    app = FastAPI(
        title="Stock Copilot API",
        version="0.1.0",
        description="Forecasts with honest uncertainty, technical analysis and portfolios.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.predictor = predictor
    app.state.keyring = keyring
    app.state.email_sender = LogEmailSender()  # deployments and tests may replace it
    install_error_handlers(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=True,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(RequestContextMiddleware)
    app.include_router(health.router)  # probes are never rate limited
    app.include_router(auth.router)  # its own, stricter tier
    for router in (
        users.router,
        portfolio.watchlists,
        portfolio.router,
        stocks.router,
        market.router,
        analysis.router,
        predictions.router,
        models.router,
        admin.router,
    ):
        app.include_router(router, dependencies=[rate_limited("default")])
    attach_examples(app)
    return app
