"""A JSON cache in Redis that degrades to "no cache" when Redis is unreachable — never an error."""

from __future__ import annotations

import json
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = structlog.get_logger(__name__)


class JsonCache:
    def __init__(self, redis: Redis, prefix: str, ttl_s: int) -> None:
        self._redis = redis
        self._prefix = prefix
        self._ttl = ttl_s

    def key(self, *parts: object) -> str:
        return ":".join([self._prefix, *(str(p) for p in parts)])

    async def get_many(self, keys: list[str]) -> list[Any | None]:
        if not keys:
            return []
        try:
            raw = await self._redis.mget(keys)
        except (RedisError, OSError) as exc:
            log.warning("cache_unavailable", op="get", error=type(exc).__name__)
            return [None] * len(keys)
        return [json.loads(v) if v is not None else None for v in raw]

    async def set_many(self, items: dict[str, Any]) -> None:
        if not items:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, value in items.items():
                    pipe.set(key, json.dumps(value, default=str), ex=self._ttl)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("cache_unavailable", op="set", error=type(exc).__name__)
