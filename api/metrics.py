"""Prometheus metrics of the API (served at `/metrics`, next to Ray Serve's own metrics).

Every metric is defined once, in `SPECS` (name, help, labels, buckets), and built on a backend:
in-process (tests, `--no-ray`) on the app's own prometheus_client registry (tests build many
apps in one process); under Ray Serve the per-replica ones on Ray's metrics export
(serving.metrics), which tags each series with its deployment and replica, so the counts of
several ingress replicas add up instead of one replica answering each scrape. Gauges read from the
database or Redis at scrape time are the same whichever replica answers, and always stay on the
app's registry. Names follow Prometheus conventions and are what the Grafana dashboards in
`deploy/grafana/` and the alerts in `deploy/prometheus/alerts.yml` query:

| metric | labels | what |
|---|---|---|
| `stockcopilot_http_requests_total` | method, route, status | requests (sockets: `WS`) |
| `stockcopilot_http_request_duration_seconds` | method, route | latency histogram |
| `stockcopilot_predictions_total` | family, version, variant | forecasts served (cache hits too) |
| `stockcopilot_prediction_cache_total` | result | `hit` / `miss` per forecast |
| `stockcopilot_feed_days_total` | | trading days the feed processed (on the leading replica) |
| `stockcopilot_websocket_connections` | stream | open sockets on this replica |
| `stockcopilot_chat_requests_total` | provider, outcome | chat answers and provider failures |
| `stockcopilot_rate_limit_rejections_total` | tier | 429s |
| `stockcopilot_feed_lag_seconds` | | seconds since the feed last processed a day (any replica) |
| `stockcopilot_feed_up` | mode | 1 when market data is current and its provider is not failing |
| `stockcopilot_feed_sessions_behind` | | completed sessions newer than the newest bar |
| `stockcopilot_feed_provider_failures` | provider | consecutive failed provider rounds |
| `stockcopilot_feed_last_success_timestamp_seconds` | provider | the provider's last good round |
| `stockcopilot_live_pinball_loss` | family, variant | live pinball loss, 7 days |
| `stockcopilot_users`, `_portfolios`, `_conversations` | | totals (set at scrape) |

Routes are labelled by their template (`/api/v1/stocks/{ticker}`), never the raw path, so a
scanner cannot blow up the label space; unmatched paths share the label `unmatched`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal, Protocol, Self

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


Kind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True)
class MetricSpec:
    """One metric as both backends build it. `name` has no `_total`: counters get it on export.
    `shared` metrics are set at scrape time from the database or Redis (the same on every
    replica); the others record what happens in one replica."""

    name: str
    help: str
    kind: Kind
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    shared: bool = False

    def exposed(self) -> tuple[str, ...]:
        """The series names Prometheus stores for it."""
        if self.kind == "counter":
            return (f"{self.name}_total",)
        if self.kind == "histogram":
            return tuple(f"{self.name}_{part}" for part in ("bucket", "sum", "count"))
        return (self.name,)


def _spec(name: str, text: str, kind: Kind, *labels: str, shared: bool = False) -> MetricSpec:
    buckets = LATENCY_BUCKETS if kind == "histogram" else ()
    return MetricSpec(f"stockcopilot_{name}", text, kind, labels, buckets, shared)


REQUESTS = _spec("http_requests", "Requests answered", "counter", "method", "route", "status")
LATENCY = _spec("http_request_duration_seconds", "Request latency", "histogram", "method", "route")
PREDICTIONS = _spec("predictions", "Forecasts served", "counter", "family", "version", "variant")
CACHE = _spec("prediction_cache", "Forecast cache lookups", "counter", "result")
FEED_DAYS = _spec("feed_days", "Trading days processed", "counter")
SOCKETS = _spec("websocket_connections", "Open WebSockets", "gauge", "stream")
CHAT = _spec("chat_requests", "Chat provider calls", "counter", "provider", "outcome")
RATE_LIMITED = _spec("rate_limit_rejections", "Requests refused with 429", "counter", "tier")
FEED_LAG = _spec(
    "feed_lag_seconds", "Seconds since the feed last processed a day", "gauge", shared=True
)
FEED_UP = _spec("feed_up", "Market data current and provider healthy", "gauge", "mode", shared=True)
FEED_BEHIND = _spec(
    "feed_sessions_behind", "Completed sessions newer than the newest bar", "gauge", shared=True
)
FEED_FAILURES = _spec(
    "feed_provider_failures", "Consecutive failed provider rounds", "gauge", "provider", shared=True
)
FEED_LAST_SUCCESS = _spec(
    "feed_last_success_timestamp_seconds",
    "When the live provider last answered a whole round",
    "gauge",
    "provider",
    shared=True,
)
LIVE_LOSS = _spec(
    "live_pinball_loss",
    "Mean pinball loss of live forecasts scored in the last 7 days",
    "gauge",
    "family",
    "variant",
    shared=True,
)
USERS = _spec("users", "Accounts", "gauge", shared=True)
PORTFOLIOS = _spec("portfolios", "Portfolios", "gauge", shared=True)
CONVERSATIONS = _spec("conversations", "Chat conversations", "gauge", shared=True)

SPECS: tuple[MetricSpec, ...] = (
    REQUESTS, LATENCY, PREDICTIONS, CACHE, FEED_DAYS, SOCKETS, CHAT, RATE_LIMITED, FEED_LAG,
    FEED_UP, FEED_BEHIND, FEED_FAILURES, FEED_LAST_SUCCESS, LIVE_LOSS, USERS, PORTFOLIOS,
    CONVERSATIONS,
)  # fmt: skip


class CounterLike(Protocol):
    def labels(self, *values: str) -> Self: ...
    def inc(self, amount: float = 1) -> None: ...


class GaugeLike(Protocol):
    def labels(self, *values: str) -> Self: ...
    def inc(self, amount: float = 1) -> None: ...
    def dec(self, amount: float = 1) -> None: ...
    def set(self, value: float) -> None: ...


class HistogramLike(Protocol):
    def labels(self, *values: str) -> Self: ...
    def observe(self, amount: float) -> None: ...


class MetricsBackend(Protocol):
    """Builds a spec's metric: prometheus_client here, Ray's metrics in serving.metrics."""

    def counter(self, spec: MetricSpec) -> CounterLike: ...
    def gauge(self, spec: MetricSpec) -> GaugeLike: ...
    def histogram(self, spec: MetricSpec) -> HistogramLike: ...


class PrometheusBackend:
    """The metrics on one prometheus_client registry (what `/metrics` renders)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def counter(self, spec: MetricSpec) -> Counter:
        return Counter(spec.name, spec.help, spec.labels, registry=self.registry)

    def gauge(self, spec: MetricSpec) -> Gauge:
        return Gauge(spec.name, spec.help, spec.labels, registry=self.registry)

    def histogram(self, spec: MetricSpec) -> Histogram:
        return Histogram(
            spec.name, spec.help, spec.labels, buckets=spec.buckets, registry=self.registry
        )


class Metrics:
    """The app's metrics: per-replica ones on `backend` (default: the app's registry), the
    scrape-time gauges always on the app's registry."""

    def __init__(
        self,
        feed_mode: Literal["replay", "live", "off"] = "off",
        backend: MetricsBackend | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._feed_mode = feed_mode
        local = PrometheusBackend(self.registry)
        events = backend or local
        self.requests = events.counter(REQUESTS)
        self.latency = events.histogram(LATENCY)
        self.predictions = events.counter(PREDICTIONS)
        self.cache = events.counter(CACHE)
        self.feed_days = events.counter(FEED_DAYS)
        self.sockets = events.gauge(SOCKETS)
        self.chat = events.counter(CHAT)
        self.rate_limited = events.counter(RATE_LIMITED)
        self.feed_lag = local.gauge(FEED_LAG)
        self.feed_up = local.gauge(FEED_UP)
        self.feed_behind = local.gauge(FEED_BEHIND)
        self.feed_failures = local.gauge(FEED_FAILURES)
        self.feed_last_success = local.gauge(FEED_LAST_SUCCESS)
        self.live_loss = local.gauge(LIVE_LOSS)
        self.users = local.gauge(USERS)
        self.portfolios = local.gauge(PORTFOLIOS)
        self.conversations = local.gauge(CONVERSATIONS)
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
