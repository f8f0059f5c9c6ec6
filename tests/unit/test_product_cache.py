"""``ProductCache`` generation rules against an in-memory cache that can be switched off."""

from __future__ import annotations

import pytest

from arcana.services.products import ProductCache
from tests.conftest import wait_for

pytestmark = pytest.mark.asyncio(loop_scope="session")


class SwitchableCache:
    """Dict cache; while ``down`` every operation degrades like the Redis adapter does."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.down = False

    async def get(self, key: str) -> bytes | None:
        return None if self.down else self.data.get(key)

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        if not self.down:
            self.data[key] = value

    async def add(self, key: str, value: bytes, ttl: int) -> bool:
        if self.down or key in self.data:
            return False
        self.data[key] = value
        return True

    async def delete(self, *keys: str) -> None:
        if not self.down:
            for k in keys:
                self.data.pop(k, None)

    async def ping(self) -> bool:
        return not self.down


async def test_old_generation_is_never_read_again() -> None:
    backing = SwitchableCache()
    cache = ProductCache(backing, 60)
    gen = await cache.generation("p")
    assert gen is not None
    await cache.invalidate("p")  # a write commits while a reader holds ``gen``
    await cache.populate("p", gen, "json", b"old")  # the slow reader stores what it loaded
    new_gen = await cache.generation("p")
    assert new_gen != gen
    assert await cache.get("p", new_gen, "json") is None


async def test_failed_invalidation_is_owed_and_paid() -> None:
    backing = SwitchableCache()
    cache = ProductCache(backing, 60)
    cache.RETRY_INTERVAL = 0.01
    gen = await cache.generation("p")
    assert gen is not None
    await cache.populate("p", gen, "json", b"old")
    backing.down = True
    await cache.invalidate("p")
    assert "p" in cache.pending
    assert await cache.generation("p") is None  # bypass while owed
    backing.down = False
    assert await cache.generation("p") is None  # still owed until the retry ran
    await wait_for(lambda: "p" not in cache.pending, timeout=5)
    fresh = await cache.generation("p")
    assert fresh is not None
    assert fresh != gen
    assert await cache.get("p", fresh, "json") is None
    await cache.aclose()


async def test_hits_and_misses_are_counted() -> None:
    counts = {"hit": 0, "miss": 0}
    cache = ProductCache(
        SwitchableCache(),
        60,
        on_hit=lambda: counts.__setitem__("hit", counts["hit"] + 1),
        on_miss=lambda: counts.__setitem__("miss", counts["miss"] + 1),
    )
    gen = await cache.generation("p")
    assert gen is not None
    assert await cache.get("p", gen, "json") is None
    await cache.populate("p", gen, "json", b"x")
    assert await cache.get("p", gen, "json") == b"x"
    assert counts == {"hit": 1, "miss": 1}


async def test_current_is_the_hit_path_in_one_call() -> None:
    """``current``: the entry under the live generation, a hit counted and a miss not (the
    caller's full path counts it); nothing while an invalidation is owed."""
    counts = {"hit": 0, "miss": 0}
    backing = SwitchableCache()
    cache = ProductCache(
        backing,
        60,
        on_hit=lambda: counts.__setitem__("hit", counts["hit"] + 1),
        on_miss=lambda: counts.__setitem__("miss", counts["miss"] + 1),
    )
    cache.RETRY_INTERVAL = 0.01
    assert await cache.current("p", "pb") is None  # no generation yet
    gen = await cache.generation("p")
    assert gen is not None
    assert await cache.current("p", "pb") is None  # no entry in this form
    await cache.populate("p", gen, "pb", b"bytes")
    assert await cache.current("p", "pb") == b"bytes"
    assert counts == {"hit": 1, "miss": 0}
    backing.down = True
    await cache.invalidate("p")
    backing.down = False
    assert "p" in cache.pending
    assert await cache.current("p", "pb") is None  # bypassed while the invalidation is owed
    await wait_for(lambda: "p" not in cache.pending, timeout=5)
    assert await cache.current("p", "pb") is None  # the old generation is gone
    await cache.aclose()
