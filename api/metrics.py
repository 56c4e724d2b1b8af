"""Prometheus metrics of the API (served at `/metrics`, next to Ray Serve's own metrics).

One `Metrics` per app, on its own registry (tests build many apps in one process). Names follow
Prometheus conventions and are what the Grafana dashboards in `deploy/grafana/` query:

| metric | labels | what |
|---|---|---|
| `stockcopilot_http_requests_total` | method, route, status | requests (sockets: `WS`) |
| `stockcopilot_http_request_duration_seconds` | method, route | latency histogram |
| `stockcopilot_predictions_total` | family, version, variant | forecasts served (cache hits too) |
| `stockcopilot_prediction_cache_total` | result | `hit` / `miss` per forecast |
| `stockcopilot_feed_days_total` | | trading days the feed processed (on the leading replica) |
| `stockcopilot_feed_lag_seconds` | | seconds since the feed last processed a day (any replica) |
| `stockcopilot_feed_up` | mode | 1 when market data is current and its provider is not failing |
| `stockcopilot_feed_sessions_behind` | | completed sessions newer than the newest bar |
| `stockcopilot_feed_provider_failures` | provider | consecutive failed provider rounds |
| `stockcopilot_feed_last_success_timestamp_seconds` | provider | the provider's last good round |
| `stockcopilot_websocket_connections` | stream | open sockets on this replica |
| `stockcopilot_chat_requests_total` | provider, outcome | chat answers and provider failures |
| `stockcopilot_rate_limit_rejections_total` | tier | 429s |
| `stockcopilot_live_pinball_loss` | family, variant | live pinball loss, 7 days |
| `stockcopilot_users`, `_portfolios`, `_conversations` | | totals (set at scrape) |

Routes are labelled by their template (`/api/v1/stocks/{ticker}`), never the raw path, so a
scanner cannot blow up the label space; unmatched paths share the label `unmatched`.
"""

from __future__ import annotations

import time
from typing import Literal

import asyncpg
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import channels
from api.db.gauges import GaugeRepository
from api.services.health import feed_health

log = structlog.get_logger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SCRAPE_QUERY_TTL_S = 15.0  # database totals are re-read at most this often


class Metrics:
    def __init__(self, feed_mode: Literal["replay", "live", "off"] = "off") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._feed_mode = feed_mode
        r = self.registry
        self.requests = Counter(
            "stockcopilot_http_requests",
            "Requests answered",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "stockcopilot_http_request_duration_seconds",
            "Request latency",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "stockcopilot_predictions",
            "Forecasts served",
            ["family", "version", "variant"],
            registry=r,
        )
        self.cache = Counter(
            "stockcopilot_prediction_cache", "Forecast cache lookups", ["result"], registry=r
        )
        self.feed_days = Counter("stockcopilot_feed_days", "Trading days processed", registry=r)
        self.feed_lag = Gauge(
            "stockcopilot_feed_lag_seconds",
            "Seconds since the feed last processed a day",
            registry=r,
        )
        self.feed_up = Gauge(
            "stockcopilot_feed_up", "Market data current and provider healthy", ["mode"], registry=r
        )
        self.feed_behind = Gauge(
            "stockcopilot_feed_sessions_behind",
            "Completed sessions newer than the newest bar",
            registry=r,
        )
        self.feed_failures = Gauge(
            "stockcopilot_feed_provider_failures",
            "Consecutive failed provider rounds",
            ["provider"],
            registry=r,
        )
        self.feed_last_success = Gauge(
            "stockcopilot_feed_last_success_timestamp_seconds",
            "When the live provider last answered a whole round",
            ["provider"],
            registry=r,
        )
        self.sockets = Gauge(
            "stockcopilot_websocket_connections", "Open WebSockets", ["stream"], registry=r
        )
        self.chat = Counter(
            "stockcopilot_chat_requests",
            "Chat provider calls",
            ["provider", "outcome"],
            registry=r,
        )
        self.rate_limited = Counter(
            "stockcopilot_rate_limit_rejections",
            "Requests refused with 429",
            ["tier"],
            registry=r,
        )
        self.live_loss = Gauge(
            "stockcopilot_live_pinball_loss",
            "Mean pinball loss of live forecasts scored in the last 7 days",
            ["family", "variant"],
            registry=r,
        )
        self.users = Gauge("stockcopilot_users", "Accounts", registry=r)
        self.portfolios = Gauge("stockcopilot_portfolios", "Portfolios", registry=r)
        self.conversations = Gauge("stockcopilot_conversations", "Chat conversations", registry=r)
        self._totals_read_at = 0.0

    def forecasts_served(
        self, family: str, version: str, variant: str, served: int, hits: int
    ) -> None:
        self.predictions.labels(family, version, variant).inc(served)
        self.cache.labels("hit").inc(hits)
        self.cache.labels("miss").inc(served - hits)

    async def render(self, pool: asyncpg.Pool, redis: Redis) -> bytes:
        """The exposition text, with the scrape-time gauges brought up to date."""
        try:
            processed_at = await redis.get(channels.FEED_PROCESSED_AT)
            if processed_at is not None:  # whichever replica leads the feed wrote it
                self.feed_lag.set(max(0.0, time.time() - float(processed_at)))
        except (RedisError, OSError, ValueError) as exc:
            log.warning("metrics_feed_lag_unavailable", error=type(exc).__name__)
        now = time.monotonic()
        if now - self._totals_read_at >= SCRAPE_QUERY_TTL_S:
            try:
                await self._read_totals(pool)
                self._totals_read_at = now
            except (asyncpg.PostgresError, OSError) as exc:  # the other metrics still serve
                log.warning("metrics_totals_unavailable", error=type(exc).__name__)
        return generate_latest(self.registry)

    async def _read_totals(self, pool: asyncpg.Pool) -> None:
        gauges = GaugeRepository(pool)
        totals = await gauges.totals()
        self.users.set(totals.users)
        self.portfolios.set(totals.portfolios)
        self.conversations.set(totals.conversations)
        for r in await gauges.live_losses():
            self.live_loss.labels(r.family, r.variant).set(r.loss)
        feed = await feed_health(pool, self._feed_mode)
        self.feed_up.labels(self._feed_mode).set(1 if feed.healthy else 0)
        self.feed_behind.set(feed.sessions_behind)
        if feed.provider is not None:
            self.feed_failures.labels(feed.provider).set(feed.failures)
            if feed.last_success is not None:
                self.feed_last_success.labels(feed.provider).set(feed.last_success.timestamp())


class MetricsMiddleware:
    """Counts and times every HTTP request and WebSocket by route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "WS")
        started = time.perf_counter()
        status = 101 if scope["type"] == "websocket" else 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            if template != "/metrics":
                self.metrics.requests.labels(method, template, str(status)).inc()
                self.metrics.latency.labels(method, template).observe(time.perf_counter() - started)
