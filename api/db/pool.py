"""asyncpg pool creation."""

from __future__ import annotations

from typing import Any

import asyncpg

from api.settings import Settings


class DatabaseUnavailable(Exception):
    """Postgres cannot be reached right now (down, restarting, or the network); answered 503."""


async def _connect(*args: Any, **kwargs: Any) -> asyncpg.Connection:
    """asyncpg's connect, with "cannot reach the server" told apart from bugs: a socket error
    while connecting means the database is away, not that the request was wrong."""
    try:
        return await asyncpg.connect(*args, **kwargs)
    except OSError as exc:  # refused, no socket file, unreachable, timed out
        raise DatabaseUnavailable(f"{type(exc).__name__}: {exc}") from exc


async def create_pool(settings: Settings) -> asyncpg.Pool:
    if not settings.database_url:
        raise RuntimeError("database_url is not set; start embedded services first")
    # A connection the server dropped (a restart, a failover) is noticed when its socket closes
    # and replaced on the next acquire, so requests after an outage succeed without a restart.
    pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=settings.db_pool_min_size,
        max_size=settings.db_pool_max_size,
        command_timeout=60,
        connect=_connect,
    )
    assert pool is not None
    return pool
