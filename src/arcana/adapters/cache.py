"""Cache adapters: Redis (shared by every process) and an in-process TTL cache (embedded).

Both satisfy ``arcana.domain.ports.Cache``. The Redis one turns every backend error into a
miss / no-op with a rate-limited warning, so a Redis outage is "no cache", never an error.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict

from redis.asyncio import Redis
from redis.exceptions import RedisError

from arcana.metrics import CACHE_ERRORS

log = logging.getLogger(__name__)


class MemoryCache:
    """LRU + TTL dict. Python's dict ops are atomic under the event loop, so no lock."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max = max_entries

    async def get(self, key: str) -> bytes | None:
        return self.get_now(key)

    def get_now(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        expires, value = item
        if expires < time.monotonic():
            self._data.pop(key, None)
            return None
        self._data.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        self._data[key] = (time.monotonic() + ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self._max:
            self._data.popitem(last=False)

    async def add(self, key: str, value: bytes, ttl: int) -> bool:
        if await self.get(key) is not None:
            return False
        await self.set(key, value, ttl)
        return True

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self._data.pop(key, None)

    async def ping(self) -> bool:
        return True


class RedisCache:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = f"{prefix}:cache:"
        self._last_warning = 0.0

    def _degraded(self, op: str, exc: Exception) -> None:
        CACHE_ERRORS.inc()
        now = time.monotonic()
        if now - self._last_warning > 10:
            self._last_warning = now
            log.warning("redis cache %s failed, serving without cache: %s", op, exc)

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self._redis.get(self._prefix + key)
            return value if isinstance(value, bytes) or value is None else value.encode()
        except (RedisError, OSError) as exc:
            self._degraded("get", exc)
            return None

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        try:
            await self._redis.set(self._prefix + key, value, ex=ttl)
        except (RedisError, OSError) as exc:
            self._degraded("set", exc)

    async def add(self, key: str, value: bytes, ttl: int) -> bool:
        try:
            return bool(await self._redis.set(self._prefix + key, value, ex=ttl, nx=True))
        except (RedisError, OSError) as exc:
            self._degraded("add", exc)
            return False

    async def delete(self, *keys: str) -> None:
        if not keys:
            return
        try:
            await self._redis.delete(*(self._prefix + k for k in keys))
        except (RedisError, OSError) as exc:
            self._degraded("delete", exc)

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False
