"""The FastAPI application factory. Nothing happens at import time."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date
from typing import Annotated

import asyncpg
import structlog
from fastapi import FastAPI, Header, Response
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import CONTENT_TYPE_LATEST
from redis.asyncio import Redis
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from api.db.clock import MarketClockRepository
from api.db.pool import create_pool
from api.deps import predictions_of, rate_limited, require
from api.docs import install_docs
from api.errors import ProblemError, install_error_handlers
from api.feed import BarProcessor, FeedLeader, MarketFeed, PollingFeed, ReplayFeed
from api.metrics import Metrics, MetricsBackend, MetricsMiddleware
from api.middleware import RequestContextMiddleware, SecurityHeadersMiddleware
from api.observability import init_sentry
from api.openapi_examples import attach as attach_examples
from api.realtime import Hub
from api.routers import (
    admin,
    alerts,
    analysis,
    auth,
    chat,
    health,
    market,
    models,
    portfolio,
    predictions,
    stocks,
    users,
    watchlists,
    ws,
)
from api.security.access import PUBLIC
from api.security.crypto import Keyring
from api.security.declarations import check_routes, document_access
from api.security.input_guard import InputGuardMiddleware
from api.security.keyfile import with_secrets
from api.security.mail import email_sender
from api.security.ratelimit import RateLimiter
from api.services.ab import ChallengerWeights
from api.services.alert_evaluator import AlertEvaluator
from api.services.chat.providers import ProviderChain
from api.services.chat.service import purge_expired
from api.services.clock import MarketClock
from api.services.notifications import AlertMailer, Notifier
from api.services.prediction_log import PredictionLog
from api.settings import Settings
from contracts import Predictor
from features.live import LiveProvider, make_provider

log = structlog.get_logger(__name__)


def feed_leader(app: FastAPI) -> FeedLeader:
    """The market feed this app may run (if it wins the lease): replayed or live bars, each day
    processed with alerts evaluated against the app's own predictor."""
    state = app.state
    settings: Settings = state.settings
    predictions = predictions_of(state) if state.predictor is not None else None
    notifier = Notifier(state.pool, state.redis, AlertMailer(state.email_sender, state.keyring))
    evaluator = AlertEvaluator(state.pool, notifier, predictions)
    family = settings.feed_forecast_family

    async def forecast(tickers: list[str]) -> int:
        assert predictions is not None and family is not None
        return await predictions.forecast_day(tickers, family)

    processor = BarProcessor(
        state.pool,
        state.redis,
        evaluator,
        state.metrics.feed_days.inc,
        forecast if predictions is not None and family is not None else None,
    )

    def make_feed(after: date | None) -> MarketFeed:
        if settings.feed_mode == "live":
            return PollingFeed(state.pool, provider_from(settings), None, settings.feed_poll_s)
        return ReplayFeed(
            state.pool, settings.feed_replay_start, settings.feed_interval_s, after=after
        )

    return FeedLeader(
        state.redis,
        processor,
        make_feed,
        settings.feed_lease_s,
        loop=settings.feed_loop or settings.feed_mode == "live",
    )


def provider_from(settings: Settings) -> LiveProvider:
    """The configured live market-data provider (`MARKET_DATA_PROVIDER`)."""
    key = settings.tiingo_api_key
    return make_provider(
        settings.market_data_provider,
        tiingo_api_key=None if key is None else key.get_secret_value(),
        tiingo_base_url=settings.tiingo_base_url,
    )


CHAT_PURGE_EVERY_S = 3_600.0


async def _purge_chats(app: FastAPI) -> None:
    """Chat history retention: delete what is older than `chat_retention_days`, hourly (every
    replica may do it; the delete is idempotent)."""
    while True:
        try:
            deleted = await purge_expired(app.state.pool, app.state.settings.chat_retention_days)
            if deleted:
                log.info("chat_retention_purged", messages=deleted)
        except (asyncpg.PostgresError, OSError) as exc:  # the next round retries
            log.warning("chat_retention_failed", error=type(exc).__name__)
        await asyncio.sleep(CHAT_PURGE_EVERY_S)


def create_app(
    settings: Settings,
    predictor: Predictor | None = None,
    metrics_backend: MetricsBackend | None = None,
) -> FastAPI:
    """Build the API. `settings` must carry concrete database and Redis URLs; unset keys are
    taken from (or generated into) the data folder's key file, outside production.
    `metrics_backend` records the per-replica metrics somewhere other than `/metrics` (Ray's
    export under Serve, serving.metrics); by default they are on the app's own registry."""

    settings = with_secrets(settings)
    keyring = Keyring.from_settings(settings)  # refuses missing keys
    init_sentry(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await create_pool(settings)
        app.state.redis = Redis.from_url(settings.redis_url or "", decode_responses=True)
        app.state.rate_limiter = RateLimiter(app.state.redis)
        app.state.challenger_weights = ChallengerWeights(app.state.pool)
        app.state.clock = MarketClock(app.state.pool)
        app.state.prediction_log = PredictionLog(app.state.pool)
        app.state.prediction_log.start()
        app.state.hub = Hub(app.state.redis, predictions_of(app.state))
        await app.state.hub.start()
        background = [asyncio.create_task(_purge_chats(app), name="chat-retention")]
        if settings.feed_mode == "live":  # live data: the real clock, nothing hidden
            await MarketClockRepository(app.state.pool).stop()
        if settings.feed_mode != "off":
            background.append(asyncio.create_task(feed_leader(app).run(), name="feed"))
        try:
            yield
        finally:
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await app.state.hub.stop()
            await app.state.prediction_log.close()  # every queued row, before the pool goes
            await app.state.email_sender.aclose()
            await app.state.chat.aclose()
            await app.state.redis.aclose()
            await app.state.pool.close()

    docs = settings.docs_enabled
    app = FastAPI(
        title="Stock Copilot API",
        version="0.1.0",
        description="Forecasts with honest uncertainty, technical analysis and portfolios.",
        lifespan=lifespan,
        docs_url=None,  # served from this server's own assets below (api/docs.py)
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
    )
    if docs:
        install_docs(app, "/openapi.json")
    app.state.settings = settings
    app.state.predictor = predictor
    app.state.keyring = keyring
    app.state.metrics = metrics = Metrics(settings.feed_mode, metrics_backend)
    app.state.chat = ProviderChain.from_settings(settings)  # circuit state lives with the app
    app.state.chat.observer = lambda provider, outcome: metrics.chat.labels(provider, outcome).inc()
    app.state.email_sender = email_sender(settings)  # tests may replace it
    install_error_handlers(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=True,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    app.add_middleware(
        InputGuardMiddleware,
        max_body_bytes=settings.max_body_bytes,
        max_upload_bytes=settings.max_upload_bytes,
        upload=lambda path: path.endswith("/import"),  # the CSV imports
    )
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(RequestContextMiddleware, echo=settings.echo_request_id)
    if settings.trusted_proxies:  # outermost: everything inside sees the real client address
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)

    @app.get("/metrics", include_in_schema=False, dependencies=[require(PUBLIC)])
    async def prometheus_metrics(authorization: Annotated[str, Header()] = "") -> Response:
        """Prometheus exposition of this app's metrics (see api/metrics.py; under Serve only the
        scrape-time gauges, the same on every replica), for the holder of `METRICS_TOKEN` only:
        the counts tell an outsider too much."""
        expected = settings.metrics_token
        offered = authorization.removeprefix("Bearer ").strip()
        if expected is None or not hmac.compare_digest(
            offered.encode(), expected.get_secret_value().encode()
        ):
            raise ProblemError(404, "not_found", "Not Found")
        body = await metrics.render(app.state.pool, app.state.redis)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    app.include_router(health.router)  # probes are never rate limited
    app.include_router(auth.router)  # its own, stricter tier
    app.include_router(ws.router)  # sockets authenticate and throttle per connection
    for router in (
        alerts.router,
        users.router,
        watchlists.router,  # before `portfolio`: `/watchlists` is never a portfolio id
        portfolio.router,
        stocks.router,
        market.router,
        analysis.router,
        chat.router,
        predictions.router,
        models.router,
        admin.router,
    ):
        app.include_router(router, dependencies=[rate_limited("default")])
    attach_examples(app)
    check_routes(app)
    document_access(app)
    return app
