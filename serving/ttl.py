"""A small time-to-live cache for values that are cheap to keep and slow to look up."""

from __future__ import annotations

import time


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

    def pin(self, key: K, value: V) -> V:
        self._entries[key] = (float("inf"), value)
        return value

    def drop(self, key: K) -> None:
        self._entries.pop(key, None)
