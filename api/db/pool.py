"""asyncpg pool creation."""

from __future__ import annotations

import asyncpg

from api.settings import Settings


async def create_pool(settings: Settings) -> asyncpg.Pool:
    if not settings.database_url:
        raise RuntimeError("database_url is not set; start embedded services first")
    pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=settings.db_pool_min_size,
        max_size=settings.db_pool_max_size,
        command_timeout=60,
    )
    assert pool is not None
    return pool
