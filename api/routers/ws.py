"""WebSockets: `/ws/real-time` (quotes), `/ws/predictions`, `/ws/notifications`.

Protocol (full schemas in `docs/asyncapi.yaml`):

- credentials: `?token=<access token or API key>`, an `Authorization: Bearer` / `X-API-Key`
  header, or `{"action": "auth", "token": ...}` as the first message within `ws_auth_timeout_s`;
  refused connections are closed with 4401 (no or bad credentials) or 4403 (API key lacks the
  stream's scope: `read:market`, `read:predictions` or `notifications`);
- `{"action": "subscribe", "tickers": [...]}` (predictions also take `horizon` and `model`),
  `{"action": "unsubscribe", "tickers": [...]}`, `{"action": "ping"}`;
- the server sends `welcome`, `subscribed`/`unsubscribed`, `quote`, `prediction`,
  `notification`, `heartbeat` (every `ws_heartbeat_s`; credentials are re-checked then, and a
  socket whose session ended is closed with 4401), `pong` and `error` messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import structlog
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from api.errors import ProblemError
from api.realtime import SCOPE, Connection, Hub, Outbox, Stream, parse_tickers
from api.security.tokens import API_KEY_PREFIX
from api.services.accounts import AccountService
from api.services.auth import AuthService, Principal
from api.services.market_data import MarketDataService
from api.services.notifications import NotificationService
from api.settings import Settings
from contracts import FAMILIES, HORIZONS

router = APIRouter()
log = structlog.get_logger(__name__)

MAX_MESSAGE_CHARS = 4_096
MAX_ERRORS = 20  # malformed messages tolerated per connection before it is closed
BURST, BURST_WINDOW_S = 30, 10.0  # client messages per window


class Closed(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _credential(ws: WebSocket) -> str | None:
    token = ws.query_params.get("token")
    if token:
        return token
    header = ws.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return ws.headers.get("x-api-key") or None


async def _principal(auth: AuthService, credential: str) -> Principal:
    try:
        if credential.startswith(API_KEY_PREFIX):
            return await auth.principal_from_api_key(credential)
        return await auth.principal_from_token(credential)
    except ProblemError as exc:
        raise Closed(4401, exc.detail[:120]) from exc


class Session:
    """One socket: authentication, then reader, sender and heartbeat until one of them ends."""

    def __init__(self, ws: WebSocket, stream: Stream) -> None:
        state = ws.app.state
        self.ws = ws
        self.stream = stream
        self.settings: Settings = state.settings
        self.hub: Hub = state.hub
        self.sockets = state.metrics.sockets.labels(stream.value)
        self.auth = AuthService(state.pool, state.redis, state.settings, state.keyring)
        self.accounts = AccountService(state.pool)
        self.market = MarketDataService(state.pool)
        self.notifications = NotificationService(state.pool)
        self.credential: str | None = None
        self.conn: Connection | None = None
        self.errors = 0
        self.window: list[float] = []

    async def run(self) -> None:
        await self.ws.accept()
        try:
            principal = self._permitted(await self._authenticate())
            self.conn = Connection(self.stream, principal, Outbox(self.settings.ws_queue_limit))
            await self._load_preferences()
            self.hub.add(self.conn)
            self.sockets.inc()
            await self._welcome()
            tasks = [
                asyncio.create_task(self._read()),
                asyncio.create_task(self._send()),
                asyncio.create_task(self._heartbeat()),
                asyncio.create_task(self._watch()),
            ]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            for task in done:
                if isinstance(task.exception(), Closed):
                    raise task.exception()  # type: ignore[misc]
        except Closed as closed:
            await self._close(closed.code, closed.reason)
        except WebSocketDisconnect:
            pass
        finally:
            if self.conn is not None:
                self.hub.discard(self.conn)
                self.sockets.dec()

    async def _close(self, code: int, reason: str) -> None:
        if self.ws.application_state == WebSocketState.DISCONNECTED:
            return
        with contextlib.suppress(Exception):  # a stalled client must not hold us here
            await asyncio.wait_for(self.ws.close(code=code, reason=reason), timeout=5.0)

    async def _authenticate(self) -> Principal:
        self.credential = _credential(self.ws)
        if self.credential is None:
            try:
                raw = await asyncio.wait_for(
                    self.ws.receive_text(), timeout=self.settings.ws_auth_timeout_s
                )
            except TimeoutError as exc:
                raise Closed(4401, "send credentials first") from exc
            message = self._decode(raw)
            token = message.get("token") if message and message.get("action") == "auth" else None
            if not isinstance(token, str) or not token:
                raise Closed(4401, 'first message must be {"action": "auth", "token": ...}')
            self.credential = token
        return await _principal(self.auth, self.credential)

    def _permitted(self, principal: Principal) -> Principal:
        """The caller, if its credentials carry the stream's scope (checked again whenever they
        are: on re-authentication and at every heartbeat)."""
        scope = SCOPE[self.stream]
        if not principal.allows(scope):
            raise Closed(4403, f"this API key lacks the {scope!r} scope")
        return principal

    async def _load_preferences(self) -> None:
        """Model moves reach only the users who asked for them (`notifications.model_events`)."""
        assert self.conn is not None
        if self.stream == Stream.NOTIFICATIONS:
            stored = await self.accounts.preferences(self.conn.principal.user_id)
            self.conn.model_events = bool(stored and stored.notifications.model_events)

    async def _welcome(self) -> None:
        assert self.conn is not None
        welcome: dict[str, Any] = {
            "type": "welcome",
            "stream": self.stream.value,
            "user_id": str(self.conn.principal.user_id),
            "heartbeat_s": self.settings.ws_heartbeat_s,
        }
        if self.stream == Stream.NOTIFICATIONS:
            welcome["unread"] = await self.notifications.unread_count(self.conn.principal.user_id)
        self.conn.send(welcome)

    def _decode(self, raw: str) -> dict[str, Any] | None:
        if len(raw) > MAX_MESSAGE_CHARS:
            return None
        try:
            message = json.loads(raw)
        except ValueError:
            return None
        return message if isinstance(message, dict) else None

    def _error(self, code: str, detail: str) -> None:
        assert self.conn is not None
        self.errors += 1
        self.conn.send({"type": "error", "code": code, "detail": detail})
        if self.errors > MAX_ERRORS:
            raise Closed(1008, "too many invalid messages")

    def _throttled(self) -> bool:
        now = time.monotonic()
        self.window = [t for t in self.window if now - t < BURST_WINDOW_S]
        self.window.append(now)
        return len(self.window) > BURST

    async def _read(self) -> None:
        while True:
            raw = await self.ws.receive_text()
            if self._throttled():
                self._error("rate_limited", f"at most {BURST} messages per {BURST_WINDOW_S:g} s")
                continue
            message = self._decode(raw)
            if message is None:
                self._error(
                    "invalid_message",
                    f"send JSON objects of at most {MAX_MESSAGE_CHARS} characters",
                )
                continue
            await self._handle(message)

    async def _handle(self, message: dict[str, Any]) -> None:
        assert self.conn is not None
        action = message.get("action")
        if action == "ping":
            self.conn.send({"type": "pong"})
        elif action == "auth":
            await self._reauthenticate(message.get("token"))
        elif action in ("subscribe", "unsubscribe") and self.stream != Stream.NOTIFICATIONS:
            await self._subscription(action, message)
        elif action in ("subscribe", "unsubscribe"):
            self._error("invalid_action", "notifications need no subscription")
        else:
            self._error("invalid_action", "action must be subscribe, unsubscribe, auth or ping")

    async def _reauthenticate(self, token: Any) -> None:
        """A fresh token for a long-lived socket; it must be the same user's."""
        assert self.conn is not None
        if not isinstance(token, str) or not token:
            self._error("invalid_message", "auth needs a token")
            return
        principal = self._permitted(await _principal(self.auth, token))
        if principal.user_id != self.conn.principal.user_id:
            raise Closed(4401, "a socket cannot change user")
        self.credential = token
        self.conn.principal = principal
        self.conn.send({"type": "authenticated"})

    async def _subscription(self, action: str, message: dict[str, Any]) -> None:
        conn = self.conn
        assert conn is not None
        try:
            tickers = parse_tickers(message.get("tickers"), self.settings.ws_max_tickers)
        except ValueError as exc:
            self._error("invalid_tickers", str(exc))
            return
        if action == "unsubscribe":
            conn.tickers -= set(tickers)
            conn.send({"type": "unsubscribed", "tickers": sorted(conn.tickers)})
            return
        if self.stream == Stream.PREDICTIONS and not self._prediction_options(message):
            return
        unknown = await self.market.unknown(tickers)
        if unknown:
            self._error("unknown_tickers", f"no instrument {', '.join(unknown)}")
            return
        if len(conn.tickers | set(tickers)) > self.settings.ws_max_tickers:
            self._error("too_many_tickers", f"at most {self.settings.ws_max_tickers} per socket")
            return
        conn.tickers |= set(tickers)
        conn.send({"type": "subscribed", "tickers": sorted(conn.tickers)})
        if self.stream == Stream.QUOTES:
            await self.hub.snapshot_quotes(conn, tickers)
        else:
            self.hub.refresh(conn, sorted(conn.tickers), await self.hub.feed_day())

    def _prediction_options(self, message: dict[str, Any]) -> bool:
        assert self.conn is not None
        horizon = message.get("horizon", self.conn.horizon)
        model = message.get("model", self.conn.model)
        if horizon not in HORIZONS or model not in FAMILIES:
            self._error(
                "invalid_options",
                f"horizon must be one of {HORIZONS}, model one of {', '.join(FAMILIES)}",
            )
            return False
        self.conn.horizon, self.conn.model = horizon, model
        return True

    async def _send(self) -> None:
        assert self.conn is not None
        while True:
            for text in await self.conn.outbox.take():
                await self.ws.send_text(text)

    async def _watch(self) -> None:
        """End a client that fell behind (the sender may be stuck writing to it)."""
        assert self.conn is not None
        await self.conn.outbox.overflowed.wait()
        raise Closed(1013, "client too slow: messages were dropped; reconnect")

    async def _heartbeat(self) -> None:
        assert self.conn is not None
        while True:
            await asyncio.sleep(self.settings.ws_heartbeat_s)
            assert self.credential is not None
            self.conn.principal = self._permitted(await _principal(self.auth, self.credential))
            await self._load_preferences()
            self.conn.send({"type": "heartbeat", "ts": time.time()}, key="heartbeat")


@router.websocket("/ws/real-time")
async def real_time(ws: WebSocket) -> None:
    """Quotes of subscribed tickers as each new bar arrives."""
    await Session(ws, Stream.QUOTES).run()


@router.websocket("/ws/predictions")
async def predictions(ws: WebSocket) -> None:
    """Forecasts of subscribed tickers, refreshed after each new bar."""
    await Session(ws, Stream.PREDICTIONS).run()


@router.websocket("/ws/notifications")
async def notifications(ws: WebSocket) -> None:
    """Your alerts, model promotions and rollbacks, and portfolio events."""
    await Session(ws, Stream.NOTIFICATIONS).run()
