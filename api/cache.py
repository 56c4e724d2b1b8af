"""Caches: JSON in Redis that degrades to "no cache" when Redis is unreachable (never an error),
and a small in-process time-to-live cache for values that are cheap to keep and slow to look up."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
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
        return [json.loads(v) if v is not None else None for v in await self.get_raw_many(keys)]

    async def get_raw_many(self, keys: list[str]) -> list[str | None]:
        """The stored JSON documents as text, unparsed (to be sent as they are)."""
        if not keys:
            return []
        try:
            return await self._redis.mget(keys)
        except (RedisError, OSError) as exc:
            log.warning("cache_unavailable", op="get", error=type(exc).__name__)
            return [None] * len(keys)

    async def set_raw_many(self, items: dict[str, str]) -> None:
        """Store JSON documents already serialised."""
        if not items:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, value in items.items():
                    pipe.set(key, value, ex=self._ttl)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("cache_unavailable", op="set", error=type(exc).__name__)

    async def set_many(self, items: dict[str, Any]) -> None:
        await self.set_raw_many({k: json.dumps(v, default=str) for k, v in items.items()})


class TtlCache[K, V]:
    """Values expire `ttl_s` seconds after they were put; `pin` keeps one until replaced."""

    def __init__(self, ttl_s: float) -> None:
        self._ttl = ttl_s
        self._entries: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None or time.monotonic() >= entry[0]:
            return None
        return entry[1]

    def put(self, key: K, value: V) -> V:
        self._entries[key] = (time.monotonic() + self._ttl, value)
        return value

    async def get_or_load(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        """The live value, or `load()`'s, kept for the next `ttl_s` seconds."""
        found = self.get(key)
        return found if found is not None else self.put(key, await load())

    def pin(self, key: K, value: V) -> V:
        self._entries[key] = (float("inf"), value)
        return value

    def drop(self, key: K) -> None:
        self._entries.pop(key, None)
