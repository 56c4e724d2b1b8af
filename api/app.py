"""The FastAPI application factory. Nothing happens at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from redis.asyncio import Redis

from api.db.pool import create_pool
from api.errors import install_error_handlers
from api.middleware import RequestContextMiddleware
from api.predictor import Predictor
from api.routers import admin, analysis, health, models, predictions, stocks
from api.settings import Settings


def create_app(settings: Settings, predictor: Predictor | None = None) -> FastAPI:
    """Build the API. `settings` must carry concrete database and Redis URLs."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await create_pool(settings)
        app.state.redis = Redis.from_url(settings.redis_url or "", decode_responses=True)
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
    install_error_handlers(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=True,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    app.add_middleware(RequestContextMiddleware)
    for module in (health, stocks, analysis, predictions, models, admin):
        app.include_router(module.router)
    return app
