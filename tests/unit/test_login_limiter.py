from __future__ import annotations

from arcana.adapters.login_limiter import MemoryAttemptQuota, MemoryLoginLimiter


async def test_memory_limiter_reserves_before_the_check_and_gives_back_on_success() -> None:
    limiter = MemoryLoginLimiter(max_per_account=2, max_per_address=3, window_seconds=60)
    assert await limiter.reserve("a@x", "1.1.1.1") == 0
    assert await limiter.reserve("a@x", "1.1.1.1") == 0
    # Two attempts reserved: the third waits for the window, whatever their outcome.
    assert 59 <= await limiter.reserve("a@x", "1.1.1.1") <= 60
    assert await limiter.reserve("b@x", "1.1.1.1") == 0
    assert await limiter.reserve("c@x", "1.1.1.1") > 0  # the address is spent (3)
    await limiter.release("b@x", "1.1.1.1")  # a success gives its attempt back
    assert await limiter.reserve("c@x", "1.1.1.1") == 0


async def test_memory_limiter_keeps_locked_accounts_under_a_flood_of_new_keys() -> None:
    limiter = MemoryLoginLimiter(2, 1000, window_seconds=60, max_entries=10)
    for _ in range(2):
        assert await limiter.reserve("victim", "attacker") == 0
    assert await limiter.reserve("victim", "attacker") > 0
    for i in range(500):
        await limiter.reserve(f"u{i}", f"ip{i}")
    assert await limiter.reserve("victim", f"fresh-{i}") > 0
    assert len(limiter._counts) <= 20


async def test_memory_quota_counts_per_key_and_window() -> None:
    quota = MemoryAttemptQuota()
    assert [await quota.hit("b", "k", 2, 60) for _ in range(3)][:2] == [0, 0]
    assert await quota.hit("b", "k", 2, 60) > 0
    assert await quota.hit("b", "other", 2, 60) == 0


async def test_memory_limiter_refunds_an_attempt_that_checked_nothing() -> None:
    limiter = MemoryLoginLimiter(max_per_account=1, max_per_address=5, window_seconds=60)
    assert await limiter.reserve("a@x", "1.1.1.1") == 0
    await limiter.refund("a@x", "1.1.1.1")
    assert await limiter.reserve("a@x", "1.1.1.1") == 0
