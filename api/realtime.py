"""Live updates for WebSocket clients: one hub per ingress replica fans Redis pub/sub messages
out to that replica's sockets.

```
market feed ─► Redis `quotes`, `feed:days` ─┐
alerts, portfolio events ─► `notifications:user:<id>` ─┼─► Hub (every replica) ─► Outbox ─► socket
serving (alias moves, rollbacks) ─► `notifications:models` ─┘
```

The hub never waits for a socket. Each connection has an `Outbox` drained by its own sender
task: quotes and predictions are coalesced per ticker (a slow reader gets the newest value, not
a backlog), other messages queue up to `ws_queue_limit`; a client that falls further behind is
disconnected (close code 1013, "try again later") so it cannot hold memory or delay anyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from api import channels
from api.errors import ProblemError
from api.services.auth import Principal
from api.services.predictions import PredictionService
from contracts import DEFAULT_FAMILY
from features.bars import normalise_ticker

log = structlog.get_logger(__name__)


class Stream(StrEnum):
    QUOTES = "real-time"
    PREDICTIONS = "predictions"
    NOTIFICATIONS = "notifications"


SCOPE = {
    Stream.QUOTES: "read:market",
    Stream.PREDICTIONS: "read:predictions",
    Stream.NOTIFICATIONS: "notifications",
}
# what a model move tells users: who moved it (an operator's login) stays in the audit trail
MODEL_EVENT_FIELDS = ("type", "family", "alias", "from_version", "to_version", "reason")


class Outbox:
    """Messages owed to one client: coalesced by key, or queued (bounded)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._latest: dict[str, str] = {}
        self._queue: deque[str] = deque()
        self._ready = asyncio.Event()
        self.overflowed = asyncio.Event()  # set once a message had to be dropped

    def offer(self, message: str, key: str | None = None) -> None:
        if key is not None:
            self._latest[key] = message  # replaces an undelivered older value
        elif len(self._queue) >= self._limit:
            self.overflowed.set()
        else:
            self._queue.append(message)
        self._ready.set()

    async def take(self) -> list[str]:
        """Everything owed, oldest queued first, then the newest coalesced values."""
        await self._ready.wait()
        self._ready.clear()
        batch = [*self._queue, *self._latest.values()]
        self._queue.clear()
        self._latest.clear()
        return batch


@dataclass(eq=False)
class Connection:
    stream: Stream
    principal: Principal
    outbox: Outbox
    tickers: set[str] = field(default_factory=set)
    horizon: int = 5
    model: str = DEFAULT_FAMILY
    # forecast refreshes: one in flight per socket, so they arrive in feed order; days coming
    # in meanwhile collapse into the newest (a slow model skips days instead of piling up work)
    refreshing: bool = False
    pending: tuple[list[str], str | None] | None = None
    model_events: bool = False  # the user's `notifications.model_events` setting

    @property
    def user_key(self) -> str:
        return f"user:{self.principal.user_id}"

    def send(self, message: dict[str, Any], key: str | None = None) -> None:
        self.outbox.offer(json.dumps(message, default=str), key)


class Hub:
    """This replica's sockets, fed from Redis pub/sub (reconnecting while Redis is away)."""

    RETRY_S = (0.5, 1.0, 2.0, 5.0)

    def __init__(self, redis: Redis, predictions: PredictionService) -> None:
        self._redis = redis
        self._predictions = predictions
        self._connections: set[Connection] = set()
        self._task: asyncio.Task[None] | None = None
        self._refreshes: set[asyncio.Task[None]] = set()
        self._refresh_slots = asyncio.Semaphore(4)  # predictor calls in flight from this hub
        self.listening = asyncio.Event()

    @property
    def connections(self) -> int:
        return len(self._connections)

    def add(self, connection: Connection) -> None:
        self._connections.add(connection)

    def discard(self, connection: Connection) -> None:
        self._connections.discard(connection)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="ws-hub")

    async def stop(self) -> None:
        for task in [*self._refreshes, *([self._task] if self._task else [])]:
            task.cancel()
        for task in [*self._refreshes, *([self._task] if self._task else [])]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _listen(self) -> None:
        failures = 0
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(channels.QUOTES, channels.DAYS, channels.MODELS)
                await pubsub.psubscribe(f"{channels.USER_PREFIX}*")
                self.listening.set()
                failures = 0
                async for message in pubsub.listen():
                    if message["type"] in ("message", "pmessage"):
                        self.dispatch(message["channel"], message["data"])
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self.listening.clear()
                delay = self.RETRY_S[min(failures, len(self.RETRY_S) - 1)]
                failures += 1
                log.warning("ws_hub_redis_unavailable", error=type(exc).__name__, retry_s=delay)
                await asyncio.sleep(delay)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def dispatch(self, channel: str, data: str) -> None:
        """Route one pub/sub message to the sockets that want it (never blocks)."""
        try:
            message = json.loads(data)
        except ValueError:
            log.warning("ws_hub_bad_message", channel=channel)
            return
        if channel == channels.QUOTES:
            ticker = message.get("ticker")
            for conn in self._of(Stream.QUOTES):
                if ticker in conn.tickers:
                    conn.outbox.offer(data, key=ticker)
        elif channel == channels.DAYS:
            self._refresh_predictions(message)
        elif channel == channels.MODELS:
            data = {k: message[k] for k in MODEL_EVENT_FIELDS if k in message}
            note = {"type": "notification", "kind": "model", "title": _model_title(message)}
            for conn in self._of(Stream.NOTIFICATIONS):
                if conn.model_events:
                    conn.send({**note, "data": data})
        elif channel.startswith(channels.USER_PREFIX):
            user = channel.removeprefix(channels.USER_PREFIX)
            for conn in self._of(Stream.NOTIFICATIONS):
                if str(conn.principal.user_id) == user:
                    conn.outbox.offer(data)

    def _of(self, stream: Stream) -> Iterable[Connection]:
        return [c for c in self._connections if c.stream == stream]

    def _refresh_predictions(self, day_message: dict[str, Any]) -> None:
        day = day_message.get("date")
        traded = set(day_message.get("tickers") or ())
        for conn in self._of(Stream.PREDICTIONS):
            wanted = sorted(conn.tickers & traded)
            if wanted:
                self.refresh(conn, wanted, day)

    def refresh(self, conn: Connection, tickers: list[str], day: str | None) -> None:
        """Forecasts for `tickers` as of `day`, now or after the refresh in flight."""
        if conn.refreshing:
            conn.pending = (tickers, day)  # replaces an older pending day
            return
        conn.refreshing = True
        task = asyncio.create_task(self._refresh_loop(conn, tickers, day))
        self._refreshes.add(task)
        task.add_done_callback(self._refreshes.discard)

    async def _refresh_loop(self, conn: Connection, tickers: list[str], day: str | None) -> None:
        try:
            while True:
                await self.send_predictions(conn, tickers, day)
                if conn.pending is None:
                    return
                (tickers, day), conn.pending = conn.pending, None
        finally:
            conn.refreshing = False

    async def send_predictions(self, conn: Connection, tickers: list[str], day: str | None) -> None:
        """Forecasts made from `day`'s bars (the newest when None), in the caller's A/B variant,
        one message per ticker (coalesced: a slow reader gets the newest)."""
        as_of = date.fromisoformat(day) if day else None
        async with self._refresh_slots:
            try:
                found = await self._predictions.predict_many(
                    tickers, conn.horizon, conn.model, conn.user_key, as_of
                )
            except ProblemError as exc:
                conn.send({"type": "error", "code": exc.code, "detail": exc.detail}, key="error")
                return
            except Exception as exc:  # a failing model must not end the socket or the hub
                log.warning("ws_prediction_failed", error=type(exc).__name__)
                conn.send(
                    {"type": "error", "code": "prediction_failed", "detail": "try again later"},
                    key="error",
                )
                return
        for forecast in found:
            conn.send({"type": "prediction", **forecast}, key=forecast["ticker"])

    async def feed_day(self) -> str | None:
        """The last day the market feed processed (forecasts are made as of it), if known."""
        try:
            return await self._redis.get(channels.FEED_CLOCK)
        except (RedisError, OSError):
            return None

    async def snapshot_quotes(self, conn: Connection, tickers: list[str]) -> None:
        """The latest stored quote of each new subscription, so a client starts with a value."""
        try:
            stored = await self._redis.mget([f"quote:{t}" for t in tickers])
        except (RedisError, OSError):
            return
        for ticker, data in zip(tickers, stored, strict=True):
            if data is not None:
                conn.outbox.offer(data, key=ticker)


def _model_title(message: dict[str, Any]) -> str:
    family, alias = message.get("family"), message.get("alias")
    if message.get("type") == "model_rollback":
        return (
            f"{family} {alias} rolled back from v{message.get('from_version')} "
            f"to v{message.get('to_version')}: {message.get('reason')}"
        )
    return f"{family} {alias} is now v{message.get('to_version')}"


def parse_tickers(raw: Any, limit: int) -> list[str]:
    """A subscribe/unsubscribe list, normalised; ValueError with a reason when malformed."""
    if not isinstance(raw, list) or not raw or not all(isinstance(t, str) for t in raw):
        raise ValueError("tickers must be a non-empty list of strings")
    if len(raw) > limit:
        raise ValueError(f"at most {limit} tickers per message")
    return list(dict.fromkeys(normalise_ticker(t) for t in raw))
