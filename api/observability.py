"""Error reporting to Sentry (only when `SENTRY_DSN` is set), with personal data scrubbed.

Nothing personal leaves: `send_default_pii` is off (no IPs, cookies or user objects), request
bodies are never sent, headers that carry credentials are dropped, and every string left in the
event (messages, exception values, breadcrumbs, URLs, frame variables) goes through the same
masking as our logs: e-mail addresses, JWTs, API keys and bearer credentials. Users appear only
by their log pseudonym.
"""

from __future__ import annotations

from typing import Any

import sentry_sdk

from api.logging import mask_text
from api.settings import Settings

_DROPPED_HEADERS = frozenset({"authorization", "cookie", "x-api-key", "set-cookie"})
_OUR_FIELDS = ("release", "environment", "dist", "sdk")  # set by init_sentry and the SDK
_SECRET_KEYS = frozenset(
    {"password", "token", "access_token", "refresh_token", "api_key", "secret", "email", "key"}
)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {
            k: "***" if isinstance(k, str) and k.lower() in _SECRET_KEYS else _scrub(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def scrub_event(event: dict[str, Any], _hint: dict[str, Any] | None = None) -> dict[str, Any]:
    """Sentry `before_send` / `before_send_transaction`: the event without personal data."""
    request = event.get("request")
    if isinstance(request, dict):
        request.pop("data", None)
        request.pop("cookies", None)
        headers = request.get("headers")
        if isinstance(headers, dict):
            request["headers"] = {
                k: v for k, v in headers.items() if k.lower() not in _DROPPED_HEADERS
            }
    event.pop("user", None)
    ours = {k: event.pop(k) for k in _OUR_FIELDS if k in event}  # `stock-copilot@1.2` is no e-mail
    return {**_scrub(event), **ours}


def scrub_breadcrumb(crumb: dict[str, Any], _hint: dict[str, Any] | None = None) -> dict[str, Any]:
    return _scrub(crumb)


def init_sentry(settings: Settings, **options: Any) -> bool:
    """Start the Sentry SDK when a DSN is configured; returns whether it did."""
    if settings.sentry_dsn is None:
        return False
    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value(),
        environment=settings.environment.value,
        release=f"stock-copilot@{settings.app_version}",
        send_default_pii=False,
        max_request_body_size="never",
        traces_sample_rate=settings.sentry_traces_sample_rate,
        before_send=scrub_event,
        before_send_transaction=scrub_event,
        before_breadcrumb=scrub_breadcrumb,
        **options,
    )
    return True
