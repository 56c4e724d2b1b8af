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


async def _keep_session(_: asyncpg.Connection) -> None:
    """Hand a connection back to the pool without asyncpg's reset query (`RESET ALL`, `UNLISTEN
    *`, `CLOSE ALL`, unlock advisory locks): one more round trip on every release, for session
    state this app never leaves behind. Its queries change settings with `SET LOCAL` only (gone
    at commit), hold no cursors or LISTENs, and take advisory locks on dedicated connections
    (migrations). asyncpg still rolls back a transaction left open before this runs."""


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
        reset=_keep_session,
    )
    assert pool is not None
    return pool


async def ping(pool: asyncpg.Pool) -> None:
    """One round trip to Postgres (readiness): raises when it cannot answer."""
    await pool.fetchval("SELECT 1")
