"""Rate limits per key and per user: a sliding window of ``window_s`` seconds, at most ``limit`` requests.

Counted in this process by default. With ``ZHIKU_REDIS_URL`` set (compose and the Helm chart
set it), the window lives in Redis, so every gateway replica counts the same requests and a
key gets its limit once, not once per replica. Each key is one sorted set of request times,
trimmed and checked in one Lua script (atomic, so two replicas never both take the last
slot), timed by the Redis server's clock (one clock for every replica).

If Redis does not answer, requests are let through and the failure is logged: a broken
limiter should not take the API down with it.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import deque
from typing import Protocol

import redis.asyncio as redis_asyncio
from redis.exceptions import RedisError

log = logging.getLogger("zhiku.gateway.rate_limit")

WINDOW_S = 60.0


class RateLimiter(Protocol):
    async def retry_after(self, key_id: str, limit: int) -> int | None:
        """Count a request; None when allowed, else whole seconds until one would be."""
        ...

    async def close(self) -> None: ...


class MemoryRateLimiter:
    """This process's own counts (one gateway, or a limit meant per replica)."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self._window_s = window_s
        self._hits: dict[str, deque[float]] = {}

    def retry_after_at(self, key_id: str, limit: int, now: float) -> int | None:
        hits = self._hits.setdefault(key_id, deque())
        while hits and hits[0] <= now - self._window_s:
            hits.popleft()
        if len(hits) >= limit:
            return max(1, math.ceil(hits[0] + self._window_s - now))
        hits.append(now)
        return None

    async def retry_after(self, key_id: str, limit: int) -> int | None:
        return self.retry_after_at(key_id, limit, time.monotonic())

    async def close(self) -> None:
        return None


# KEYS[1]: the key's sorted set. ARGV: limit, window in ms, a unique member.
# Returns 0 when the request was counted, else the ms until the oldest request leaves.
_SLIDING_WINDOW = """
local now_parts = redis.call('TIME')
local now = now_parts[1] * 1000 + math.floor(now_parts[2] / 1000)
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(1, tonumber(oldest[2]) + window - now)
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
return 0
"""


class RedisRateLimiter:
    """Counts shared by every replica that uses the same Redis."""

    def __init__(self, url: str, window_s: float = WINDOW_S, prefix: str = "zhiku:ratelimit:") -> None:
        self._client = redis_asyncio.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._script = self._client.register_script(_SLIDING_WINDOW)
        self._window_ms = int(window_s * 1000)
        self._prefix = prefix
        self._last_warning = 0.0

    async def retry_after(self, key_id: str, limit: int) -> int | None:
        member = uuid.uuid4().hex
        try:
            wait_ms = int(
                await self._script(keys=[self._prefix + key_id], args=[limit, self._window_ms, member])
            )
        except (RedisError, OSError) as error:
            if time.monotonic() - self._last_warning > 60:
                self._last_warning = time.monotonic()
                log.warning("rate limits not enforced: Redis did not answer (%s)", error)
            return None
        return None if wait_ms == 0 else max(1, math.ceil(wait_ms / 1000))

    async def close(self) -> None:
        await self._client.aclose()


def create_rate_limiter(
    redis_url: str, window_s: float = WINDOW_S, prefix: str = "zhiku:ratelimit:"
) -> RateLimiter:
    """A limiter over ``window_s``; ``prefix`` keeps the Redis keys of two windows apart."""
    return RedisRateLimiter(redis_url, window_s, prefix) if redis_url else MemoryRateLimiter(window_s)
