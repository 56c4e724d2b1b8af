"""Pure-ASGI request-id and access-log middleware (safe for streaming and WebSockets)."""

from __future__ import annotations

import re
import time
import uuid

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "x-request-id"
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
log = structlog.get_logger("api.access")


class RequestContextMiddleware:
    """Give every request an id (the caller's, or the proxy's, if sane), bind it to logs and
    echo it back once (`echo=False` where a proxy in front echoes it already); and put the
    request's rate-limit headers (`state.rate_limit_headers`, set by api.deps.spend_rate) on
    its response, whatever made it: a route's model, a Response a route returns itself (CSV,
    JSON sent as cached), or an error handler."""

    def __init__(self, app: ASGIApp, echo: bool = True) -> None:
        self.app = app
        self.echo = echo

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        incoming = (
            dict(scope.get("headers", [])).get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")
        )
        request_id = incoming if _SAFE_ID.match(incoming) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                limits = state.get("rate_limit_headers")
                if limits:
                    headers = message.setdefault("headers", [])
                    present = {name.lower() for name, _ in headers}
                    headers.extend(
                        (name.lower().encode(), value.encode())
                        for name, value in limits.items()
                        if name.lower().encode() not in present
                    )
                if self.echo:
                    name = REQUEST_ID_HEADER.encode()
                    headers = [h for h in message.get("headers", []) if h[0].lower() != name]
                    message["headers"] = [*headers, (name, request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log.info(
                "request",
                method=scope.get("method", "WS"),
                path=scope["path"],
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )
            structlog.contextvars.unbind_contextvars("request_id", "user")


# Conservative defaults for a JSON API; the docs pages (/docs, /redoc) need their inline
# scripts, so they get no policy of their own.
_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"strict-transport-security", b"max-age=63072000; includeSubDomains"),
]
_API_CSP = b"default-src 'none'; frame-ancestors 'none'"
DOCS_PATHS = ("/docs", "/redoc", "/docs/oauth2-redirect")  # api/docs.py serves them


class SecurityHeadersMiddleware:
    """Security headers on every HTTP response (HSTS takes effect once TLS terminates in front)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = scope["path"] in DOCS_PATHS

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in _SECURITY_HEADERS if h[0] not in present)
                if not docs and b"content-security-policy" not in present:
                    headers.append((b"content-security-policy", _API_CSP))
            await send(message)

        await self.app(scope, receive, send_with_headers)
