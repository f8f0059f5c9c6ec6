"""Attempt limits: failed logins per account and per client address, and the fixed-window
quotas of registration and forgot-password.

``Redis*`` share the counts between every process (services mode); ``Memory*`` keep them in
this process (embedded mode, one process).

Reserve before the work: an attempt is counted *before* the password is checked, in one atomic
step with the check (one Lua call; in memory one synchronous step on the event loop), and given
back on success. So a burst of parallel guesses gets at most the limit's worth of Argon2
verifications, however many arrive at once.

Redis down: the Redis limiters fall back to the in-process ones (``Memory*``, same limits)
for as long as a call fails, with a rate-limited warning and
``arcana_login_limiter_errors_total`` counting. Logins keep working and each process still
enforces the limits on what it sees (with N processes, a client spread over all of them gets
up to N times a limit). Failing closed would turn a cache outage into a total login outage;
failing open would let a guesser who can take Redis down go unthrottled.

All keys of one call share the hash tag ``{limits}`` so a Lua call touching two of them stays on
one Redis Cluster slot.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

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


class MemoryLoginLimiter:
    """Dict of key → (count, window end). Each call runs without an ``await`` between its check
    and its count, and the event loop runs one coroutine at a time: that is the atomic step.

    When full, expired windows go first, then windows that are not exhausted; an exhausted
    window (a locked account or address) is never dropped before its end, so a flood of new
    keys cannot unlock anything. If every entry is exhausted the dict grows past its soft cap:
    each such entry cost the attacker a full limit's worth of hashed attempts."""

    def __init__(
        self,
        max_per_account: int,
        max_per_address: int,
        window_seconds: int,
        max_entries: int = 100_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits = {"a": max_per_account, "i": max_per_address}
        self._window = window_seconds
        self._max_entries = max_entries
        self._monotonic = monotonic
        """Seconds on a clock that never goes back; a test passes one it moves by hand."""
        self._counts: dict[str, tuple[int, float]] = {}

    def _get(self, key: str, now: float) -> tuple[int, float]:
        item = self._counts.get(key)
        if item is None or item[1] <= now:
            self._counts.pop(key, None)
            return 0, now + self._window
        return item

    def _limit(self, key: str) -> int:
        return self._limits[key[0]]

    def _make_room(self, now: float) -> None:
        if len(self._counts) < self._max_entries:
            return
        live = {k: v for k, v in self._counts.items() if v[1] > now}
        if len(live) >= self._max_entries:
            # Drop the older half of the open windows; keep every locked one.
            locked = {k: v for k, v in live.items() if v[0] >= self._limit(k)}
            open_ = [(k, v) for k, v in live.items() if v[0] < self._limit(k)]
            live = dict(open_[len(open_) // 2 :])
            live.update(locked)
        self._counts = live

    async def reserve(self, account: str, address: str) -> int:
        now = self._monotonic()
        keys = ("a:" + account, "i:" + address)
        wait = 0.0
        for key in keys:
            count, end = self._get(key, now)
            if count >= self._limit(key):
                wait = max(wait, end - now)
        if wait > 0:
            return max(1, math.ceil(wait))
        self._make_room(now)
        for key in keys:
            count, end = self._get(key, now)
            self._counts[key] = (count + 1, end)
        return 0

    async def release(self, account: str, address: str) -> None:
        now = self._monotonic()
        self._counts.pop("a:" + account, None)
        key = "i:" + address
        count, end = self._get(key, now)
        if count > 1:
            self._counts[key] = (count - 1, end)
        else:
            self._counts.pop(key, None)

    async def refund(self, account: str, address: str) -> None:
        now = self._monotonic()
        for key in ("a:" + account, "i:" + address):
            count, end = self._get(key, now)
            if count > 1:
                self._counts[key] = (count - 1, end)
            else:
                self._counts.pop(key, None)


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


class MemoryAttemptQuota:
    """In-process quotas; expired windows are dropped when the dict passes its soft cap, and
    an exhausted window is never dropped early (see ``MemoryLoginLimiter``)."""

    def __init__(
        self, max_entries: int = 100_000, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._max_entries = max_entries
        self._monotonic = monotonic
        self._counts: dict[str, tuple[int, float, int]] = {}

    async def hit(self, bucket: str, key: str, limit: int, window_seconds: int) -> int:
        now = self._monotonic()
        name = f"{bucket}:{key}"
        item = self._counts.get(name)
        if item is None or item[1] <= now:
            item = (0, now + window_seconds, limit)
        count, end, _ = item
        if count >= limit:
            return max(1, math.ceil(end - now))
        if name not in self._counts and len(self._counts) >= self._max_entries:
            self._counts = {
                k: v for k, v in self._counts.items() if v[1] > now and v[0] >= v[2]
            } or {k: v for k, v in self._counts.items() if v[1] > now}
        self._counts[name] = (count + 1, end, limit)
        return 0
