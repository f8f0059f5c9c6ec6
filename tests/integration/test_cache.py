"""One contract for both cache adapters, against a real Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from arcana.adapters.cache import MemoryCache
from arcana.adapters.redis_cache import RedisCache
from arcana.domain.ports import Cache
from tests.conftest import REDIS_URL


@pytest.fixture(params=["memory", "redis"])
async def cache(request: pytest.FixtureRequest, redis_session: str) -> AsyncIterator[Cache]:
    if request.param == "memory":
        yield MemoryCache()
        return
    redis = Redis.from_url(REDIS_URL)
    try:
        yield RedisCache(redis, f"{redis_session}-{uuid.uuid4().hex[:6]}")
    finally:
        await redis.aclose()


async def test_get_set_delete(cache: Cache) -> None:
    assert await cache.get("k") is None
    await cache.set("k", b"v", 60)
    assert await cache.get("k") == b"v"
    await cache.delete("k", "missing")
    assert await cache.get("k") is None


async def test_add_only_sets_when_absent(cache: Cache) -> None:
    assert await cache.add("a", b"1", 60) is True
    assert await cache.add("a", b"2", 60) is False
    assert await cache.get("a") == b"1"


async def test_entries_expire(cache: Cache) -> None:
    await cache.set("t", b"v", 1)
    from tests.conftest import wait_for

    async def gone() -> bool:
        return await cache.get("t") is None

    await wait_for(gone, timeout=5)


async def test_ping(cache: Cache) -> None:
    assert await cache.ping() is True


async def test_redis_outage_degrades_to_no_cache() -> None:
    # Nothing listens on port 1: every operation must quietly miss, never raise.
    redis = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2, socket_timeout=0.2)
    cache = RedisCache(redis, "down")
    try:
        await cache.set("k", b"v", 60)
        assert await cache.get("k") is None
        assert await cache.add("k", b"v", 60) is False
        await cache.delete("k")
        assert await cache.ping() is False
    finally:
        await redis.aclose()
