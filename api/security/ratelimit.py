"""Rate limits: GCRA (the generic cell rate algorithm), atomic in Redis, with a local fallback.

GCRA keeps one number per key, the theoretical arrival time (TAT) of the next request: a request
is allowed when it arrives no earlier than `TAT - burst * interval`, and then pushes TAT one
interval further. That is a smooth sliding limit of `limit` requests per `period` with bursts up
to `limit`, decided by one Lua script run atomically in Redis, so replicas share the budget.

If Redis is unreachable the API keeps serving: the same algorithm runs in this process (limits
then apply per replica instead of globally) and the switch is logged once, not per request.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = structlog.get_logger(__name__)

# KEYS: one key per limit. ARGV: now (ms), then (emission interval, burst tolerance) in ms per
# key. Returns, per key in order, {allowed (0/1), ms until the next request would be allowed,
# ms until the bucket is full again (the stored TAT minus now)}; each key is spent on its own.
_GCRA = """
local now = tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i])
  local tolerance = tonumber(ARGV[2 * i + 1])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - tolerance
  if now < allow_at then
    table.insert(out, {0, allow_at - now, tat - now})
  else
    redis.call('SET', key, new_tat, 'PX', math.ceil(new_tat - now) + 1000)
    table.insert(out, {1, 0, new_tat - now})
  end
end
return out
"""


@dataclass(frozen=True)
class Limit:
    """`limit` requests per `period_s`, bursts up to `limit`."""

    name: str
    limit: int
    period_s: float

    @property
    def interval_ms(self) -> float:
        return 1000.0 * self.period_s / self.limit


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: Limit
    retry_after_s: float  # 0 when allowed
    full_in_s: float  # until the whole burst is available again

    @property
    def remaining(self) -> int:
        used = math.ceil(self.full_in_s * 1000 / self.limit.interval_ms)
        return max(0, self.limit.limit - used)

    def headers(self) -> dict[str, str]:
        """IETF RateLimit fields (draft-ietf-httpapi-ratelimit-headers) and Retry-After."""
        window = int(self.limit.period_s)
        out = {
            "RateLimit-Limit": str(self.limit.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(math.ceil(self.full_in_s)),
            "RateLimit-Policy": f'{self.limit.limit};w={window};name="{self.limit.name}"',
        }
        if not self.allowed:
            out["Retry-After"] = str(max(1, math.ceil(self.retry_after_s)))
        return out


class RateLimiter:
    def __init__(self, redis: Redis | None, prefix: str = "rl") -> None:
        self._prefix = prefix
        self._local: dict[str, float] = {}  # key -> TAT (ms), the fallback's state
        self._degraded = False
        self._script = redis.register_script(_GCRA) if redis is not None else None

    async def hit(self, limit: Limit, subject: str) -> Decision:
        (decision,) = await self.hit_many([(limit, subject)])
        return decision

    async def hit_many(self, checks: list[tuple[Limit, str]]) -> list[Decision]:
        """Spend one request of each (limit, subject), all in one Redis round trip (the script
        by its SHA, sent in full only the first time a Redis server sees it)."""
        keys = [f"{self._prefix}:{limit.name}:{subject}" for limit, subject in checks]
        now = time.time() * 1000
        if self._script is not None:
            args: list[float] = [now]
            for limit, _ in checks:
                args += [limit.interval_ms, limit.interval_ms * limit.limit]
            try:
                found = await self._script(keys=keys, args=args)
                self._recovered()
                return [
                    Decision(bool(allowed), limit, float(retry) / 1000, float(full) / 1000)
                    for (limit, _), (allowed, retry, full) in zip(checks, found, strict=True)
                ]
            except (RedisError, OSError) as exc:
                self._degrade(exc)
        return [
            self._hit_locally(key, now, limit, limit.interval_ms * limit.limit)
            for key, (limit, _) in zip(keys, checks, strict=True)
        ]

    def _hit_locally(self, key: str, now: float, limit: Limit, tolerance: float) -> Decision:
        tat = max(self._local.get(key, now), now)
        new_tat = tat + limit.interval_ms
        allow_at = new_tat - tolerance
        if now < allow_at:
            return Decision(False, limit, (allow_at - now) / 1000, (tat - now) / 1000)
        self._local[key] = new_tat
        if len(self._local) > 100_000:  # bounded memory: forget keys whose bucket is full
            self._local = {k: v for k, v in self._local.items() if v > now}
        return Decision(True, limit, 0.0, (new_tat - now) / 1000)

    def _degrade(self, exc: Exception) -> None:
        if not self._degraded:
            log.warning("rate_limit_redis_unavailable", error=type(exc).__name__)
            self._degraded = True

    def _recovered(self) -> None:
        if self._degraded:
            log.info("rate_limit_redis_recovered")
            self._degraded = False
