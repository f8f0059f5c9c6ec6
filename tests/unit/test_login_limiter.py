"""The in-process login limiter (embedded mode); the Redis one runs in the e2e tests."""

from __future__ import annotations

from arcana.adapters.login_limiter import MemoryLoginLimiter


async def test_account_and_address_windows() -> None:
    limiter = MemoryLoginLimiter(max_per_account=2, max_per_address=3, window_seconds=60)
    assert await limiter.check("a@x", "1.1.1.1") == 0
    await limiter.record_failure("a@x", "1.1.1.1")
    assert await limiter.check("a@x", "1.1.1.1") == 0
    await limiter.record_failure("a@x", "1.1.1.1")
    assert 59 <= await limiter.check("a@x", "1.1.1.1") <= 60
    assert await limiter.check("b@x", "2.2.2.2") == 0
    await limiter.record_failure("b@x", "1.1.1.1")
    assert await limiter.check("c@x", "1.1.1.1") > 0  # the address is spent
    await limiter.reset_account("a@x")
    assert await limiter.check("a@x", "9.9.9.9") == 0


async def test_bounded_memory() -> None:
    limiter = MemoryLoginLimiter(1, 1, window_seconds=60, max_entries=10)
    for i in range(100):
        await limiter.record_failure(f"u{i}", f"ip{i}")
    assert len(limiter._counts) <= 12
