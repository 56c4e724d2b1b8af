"""Sticky A/B assignment (the same user always gets the same variant while weights are unchanged)
and the challenger weights it is made with."""

from __future__ import annotations

import hashlib

import asyncpg

from api.cache import TtlCache
from api.db.ab import challenger_weight
from contracts import CHALLENGER, CHAMPION, Routing

__all__ = ["CHALLENGER", "CHAMPION", "ChallengerWeights", "assign", "bucket"]


def bucket(user_key: str, family: str) -> float:
    """A uniform number in [0, 1) fixed by (user, family): independent across families."""
    digest = hashlib.sha256(f"{family}:{user_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign(user_key: str, family: str, challenger_weight: float, has_challenger: bool) -> str:
    """champion or challenger for this user; users below the weight see the challenger."""
    if not has_challenger or challenger_weight <= 0:
        return CHAMPION
    return CHALLENGER if bucket(user_key, family) < challenger_weight else CHAMPION


class ChallengerWeights:
    """Each family's challenger traffic share (`stockcopilot ab set`, stored in Postgres), read
    where the variant is chosen and kept `ttl_s` seconds: a changed weight applies within
    seconds, without a restart, and costs no query per request."""

    def __init__(self, pool: asyncpg.Pool, ttl_s: float = 5.0) -> None:
        self._pool = pool
        self._cache: TtlCache[str, float] = TtlCache(ttl_s)

    async def share(self, routing: Routing) -> float:
        """The challenger's share of `routing`'s family: 0.0, with no query, while it has none."""
        return 0.0 if routing.challenger is None else await self(routing.family)

    async def __call__(self, family: str) -> float:
        return await self._cache.get_or_load(family, lambda: challenger_weight(self._pool, family))
