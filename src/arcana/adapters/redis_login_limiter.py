"""The attempt limits shared by every process, on Redis (``login_limiter.py`` says how the
limits work, and what happens while Redis is down)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from arcana.adapters.login_limiter import MemoryAttemptQuota, MemoryLoginLimiter
from arcana.metrics import LOGIN_LIMITER_ERRORS

log = logging.getLogger(__name__)

# KEYS: the account and address counters. ARGV: account max, address max, window (ms).
# Returns 0 when the attempt was reserved (both counters incremented), else the milliseconds
# until the fuller of the exhausted windows frees.
_RESERVE = """
local wait = 0
local limits = {tonumber(ARGV[1]), tonumber(ARGV[2])}
for i = 1, 2 do
  local n = tonumber(redis.call('GET', KEYS[i]) or '0')
  if n >= limits[i] then
    local t = redis.call('PTTL', KEYS[i])
    if t < 0 then t = tonumber(ARGV[3]) end
    if t > wait then wait = t end
  end
end
if wait > 0 then return wait end
for i = 1, 2 do
  local n = redis.call('INCR', KEYS[i])
  if n == 1 or redis.call('PTTL', KEYS[i]) < 0 then
    redis.call('PEXPIRE', KEYS[i], ARGV[3])
  end
end
return 0
"""

# Success: the account's count is cleared, the address gets its attempt back.
_RELEASE = """
redis.call('DEL', KEYS[1])
local n = tonumber(redis.call('GET', KEYS[2]) or '0')
if n > 0 then redis.call('DECR', KEYS[2]) end
return 0
"""

# The attempt never reached the password check (no hashing slot): both counts go back down.
_REFUND = """
for i = 1, 2 do
  local n = tonumber(redis.call('GET', KEYS[i]) or '0')
  if n > 0 then redis.call('DECR', KEYS[i]) end
end
return 0
"""

# KEYS: one counter. ARGV: limit, window (ms). 0 = counted; else ms until the window frees.
_HIT = """
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[1]) then
  local t = redis.call('PTTL', KEYS[1])
  if t < 0 then t = tonumber(ARGV[2]) end
  return t
end
n = redis.call('INCR', KEYS[1])
if n == 1 or redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


def _digest(value: str) -> str:
    # Keys carry no email addresses or IPs in clear.
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def _seconds(ms: int) -> int:
    return max(1, math.ceil(ms / 1000))


class _Degraded:
    # At most this many limiter calls in flight per process: a burst larger than the Redis
    # connection pool would otherwise fail with "Too many connections" and, failing open,
    # walk straight past the limit. The calls are one short Lua script each, so they queue.
    MAX_IN_FLIGHT = 32

    def __init__(self) -> None:
        self._last_warning = 0.0
        self._in_flight = asyncio.Semaphore(self.MAX_IN_FLIGHT)

    def _degraded(self, op: str, exc: Exception) -> None:
        LOGIN_LIMITER_ERRORS.inc()
        now = time.monotonic()
        if now - self._last_warning > 10:
            self._last_warning = now
            log.warning("attempt limiter %s failed, counting in this process only: %s", op, exc)


class RedisLoginLimiter(_Degraded):
    def __init__(
        self,
        redis: Redis,
        prefix: str,
        max_per_account: int,
        max_per_address: int,
        window_seconds: int,
    ) -> None:
        super().__init__()
        self._prefix = f"{prefix}:{{limits}}:login"
        self._max_account = max_per_account
        self._max_address = max_per_address
        self._window_ms = window_seconds * 1000
        self._reserve = redis.register_script(_RESERVE)
        self._release = redis.register_script(_RELEASE)
        self._refund = redis.register_script(_REFUND)
        # Counts while Redis fails. An attempt reserved in one and settled in the other is
        # given back to the wrong one, which only ever leaves the other one stricter.
        self._fallback = MemoryLoginLimiter(max_per_account, max_per_address, window_seconds)

    def _keys(self, account: str, address: str) -> list[str]:
        return [
            f"{self._prefix}:acct:{_digest(account)}",
            f"{self._prefix}:addr:{_digest(address)}",
        ]

    async def reserve(self, account: str, address: str) -> int:
        try:
            async with self._in_flight:
                wait = int(
                    await self._reserve(
                        keys=self._keys(account, address),
                        args=[self._max_account, self._max_address, self._window_ms],
                    )
                )
        except (RedisError, OSError) as exc:
            self._degraded("reserve", exc)
            return await self._fallback.reserve(account, address)
        return _seconds(wait) if wait > 0 else 0

    async def release(self, account: str, address: str) -> None:
        try:
            async with self._in_flight:
                await self._release(keys=self._keys(account, address))
        except (RedisError, OSError) as exc:
            self._degraded("release", exc)
            await self._fallback.release(account, address)

    async def refund(self, account: str, address: str) -> None:
        try:
            async with self._in_flight:
                await self._refund(keys=self._keys(account, address))
        except (RedisError, OSError) as exc:
            self._degraded("refund", exc)
            await self._fallback.refund(account, address)


class RedisAttemptQuota(_Degraded):
    """Fixed-window quotas (registrations per address, reset mails per email...) shared by
    every process."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        super().__init__()
        self._prefix = f"{prefix}:{{limits}}:quota"
        self._hit = redis.register_script(_HIT)
        self._fallback = MemoryAttemptQuota()  # counts while Redis fails (module docstring)

    async def hit(self, bucket: str, key: str, limit: int, window_seconds: int) -> int:
        name = f"{self._prefix}:{bucket}:{_digest(key)}"
        try:
            async with self._in_flight:
                wait = int(await self._hit(keys=[name], args=[limit, window_seconds * 1000]))
        except (RedisError, OSError) as exc:
            self._degraded("quota", exc)
            return await self._fallback.hit(bucket, key, limit, window_seconds)
        return _seconds(wait) if wait > 0 else 0
