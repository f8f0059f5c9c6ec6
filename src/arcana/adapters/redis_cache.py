"""The Redis cache, shared by every process (services mode); ``cache.py`` has the in-process one.

It satisfies ``arcana.domain.ports.Cache`` and turns every backend error into a miss / no-op
with a rate-limited warning, so a Redis outage is "no cache", never an error.
"""

from __future__ import annotations

import logging
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from arcana.metrics import CACHE_ERRORS

log = logging.getLogger(__name__)


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
