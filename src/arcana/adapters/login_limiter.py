"""Failed-login counters: fixed windows per account and per client address.

``RedisLoginLimiter`` shares the counts between every process (services mode);
``MemoryLoginLimiter`` keeps them in this process (embedded mode, one process).

Redis down: the limiter *fails open* — logins keep working, unthrottled, with a rate-limited
warning and ``arcana_login_limiter_errors_total`` counting. Failing closed would turn a cache
outage into a total login outage; Argon2's cost still bounds how fast guesses can go.
"""

from __future__ import annotations

import hashlib
import logging
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from arcana.metrics import LOGIN_LIMITER_ERRORS

log = logging.getLogger(__name__)

# INCR, and start the window on the first failure only (a fixed window: it frees at its end).
_INCR = """
local n = redis.call('INCR', KEYS[1])
if n == 1 or redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
"""


def _digest(value: str) -> str:
    # Keys carry no email addresses or IPs in clear.
    return hashlib.sha256(value.encode()).hexdigest()[:32]


class RedisLoginLimiter:
    def __init__(
        self,
        redis: Redis,
        prefix: str,
        max_per_account: int,
        max_per_address: int,
        window_seconds: int,
    ) -> None:
        self._redis = redis
        self._prefix = f"{prefix}:login"
        self._max_account = max_per_account
        self._max_address = max_per_address
        self._window = window_seconds
        self._incr = redis.register_script(_INCR)
        self._last_warning = 0.0

    def _keys(self, account: str, address: str) -> tuple[str, str]:
        return (
            f"{self._prefix}:acct:{_digest(account)}",
            f"{self._prefix}:addr:{_digest(address)}",
        )

    def _degraded(self, op: str, exc: Exception) -> None:
        LOGIN_LIMITER_ERRORS.inc()
        now = time.monotonic()
        if now - self._last_warning > 10:
            self._last_warning = now
            log.warning("login limiter %s failed, allowing logins unthrottled: %s", op, exc)

    async def check(self, account: str, address: str) -> int:
        acct, addr = self._keys(account, address)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.get(acct)
                pipe.ttl(acct)
                pipe.get(addr)
                pipe.ttl(addr)
                a_count, a_ttl, i_count, i_ttl = await pipe.execute()
        except (RedisError, OSError) as exc:
            self._degraded("check", exc)
            return 0
        wait = 0
        if a_count is not None and int(a_count) >= self._max_account:
            wait = max(wait, int(a_ttl) if int(a_ttl) > 0 else self._window)
        if i_count is not None and int(i_count) >= self._max_address:
            wait = max(wait, int(i_ttl) if int(i_ttl) > 0 else self._window)
        return wait

    async def record_failure(self, account: str, address: str) -> None:
        acct, addr = self._keys(account, address)
        try:
            await self._incr(keys=[acct], args=[self._window])
            await self._incr(keys=[addr], args=[self._window])
        except (RedisError, OSError) as exc:
            self._degraded("record", exc)

    async def reset_account(self, account: str) -> None:
        acct, _ = self._keys(account, "")
        try:
            await self._redis.delete(acct)
        except (RedisError, OSError) as exc:
            self._degraded("reset", exc)


class MemoryLoginLimiter:
    """Dict of key → (count, window end). Event-loop single-threaded, so no lock."""

    def __init__(
        self,
        max_per_account: int,
        max_per_address: int,
        window_seconds: int,
        max_entries: int = 100_000,
    ) -> None:
        self._max_account = max_per_account
        self._max_address = max_per_address
        self._window = window_seconds
        self._max_entries = max_entries
        self._counts: dict[str, tuple[int, float]] = {}

    def _get(self, key: str, now: float) -> tuple[int, float]:
        item = self._counts.get(key)
        if item is None or item[1] <= now:
            self._counts.pop(key, None)
            return 0, now
        return item

    async def check(self, account: str, address: str) -> int:
        now = time.monotonic()
        wait = 0.0
        count, end = self._get("a:" + account, now)
        if count >= self._max_account:
            wait = max(wait, end - now)
        count, end = self._get("i:" + address, now)
        if count >= self._max_address:
            wait = max(wait, end - now)
        return int(wait) + 1 if wait > 0 else 0

    async def record_failure(self, account: str, address: str) -> None:
        now = time.monotonic()
        if len(self._counts) >= self._max_entries:
            # Expired windows first; if that is not enough, the oldest half (insertion order).
            live = {k: v for k, v in self._counts.items() if v[1] > now}
            if len(live) >= self._max_entries:
                live = dict(list(live.items())[len(live) // 2 :])
            self._counts = live
        for key in ("a:" + account, "i:" + address):
            count, end = self._get(key, now)
            self._counts[key] = (count + 1, end if count else now + self._window)

    async def reset_account(self, account: str) -> None:
        self._counts.pop("a:" + account, None)
