from __future__ import annotations

from collections.abc import Callable

from arcana.adapters.login_limiter import MemoryAttemptQuota, MemoryLoginLimiter
from arcana.adapters.redis_client import connect_redis
from arcana.adapters.redis_login_limiter import RedisAttemptQuota, RedisLoginLimiter
from tests.fakes import FakeClock
from tests.process import free_port


def seconds(clock: FakeClock) -> Callable[[], float]:
    """The limiters' monotonic clock, read from a clock the test moves by hand."""
    return lambda: clock.now().timestamp()


async def test_memory_limiter_reserves_before_the_check_and_gives_back_on_success() -> None:
    clock = FakeClock()
    limiter = MemoryLoginLimiter(
        max_per_account=2, max_per_address=3, window_seconds=60, monotonic=seconds(clock)
    )
    assert await limiter.reserve("a@x", "1.1.1.1") == 0
    clock.advance(10)
    assert await limiter.reserve("a@x", "1.1.1.1") == 0
    # Two attempts reserved: the third waits for the window, whatever their outcome. The
    # window began with the first attempt, 10 s ago.
    assert await limiter.reserve("a@x", "1.1.1.1") == 50
    assert await limiter.reserve("b@x", "1.1.1.1") == 0
    assert await limiter.reserve("c@x", "1.1.1.1") == 50  # the address is spent (3)
    await limiter.release("b@x", "1.1.1.1")  # a success gives its attempt back
    assert await limiter.reserve("c@x", "1.1.1.1") == 0
    clock.advance(49.5)
    assert await limiter.reserve("a@x", "2.2.2.2") == 1  # rounded up, never 0 while locked
    clock.advance(0.5)
    assert await limiter.reserve("a@x", "2.2.2.2") == 0  # the window ended: a fresh one


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
    clock = FakeClock()
    quota = MemoryAttemptQuota(monotonic=seconds(clock))
    assert [await quota.hit("b", "k", 2, 60) for _ in range(2)] == [0, 0]
    clock.advance(15)
    assert await quota.hit("b", "k", 2, 60) == 45
    assert await quota.hit("b", "other", 2, 60) == 0
    clock.advance(45)
    assert await quota.hit("b", "k", 2, 60) == 0  # a new window


async def test_memory_limiter_refunds_an_attempt_that_checked_nothing() -> None:
    limiter = MemoryLoginLimiter(max_per_account=1, max_per_address=5, window_seconds=60)
    assert await limiter.reserve("a@x", "1.1.1.1") == 0
    await limiter.refund("a@x", "1.1.1.1")
    assert await limiter.reserve("a@x", "1.1.1.1") == 0


async def test_redis_limiters_count_in_the_process_while_redis_is_unreachable() -> None:
    """The service's own Redis client, whose Redis refuses connections (nothing listens on the
    port): the limits still hold, counted in this process, instead of letting every attempt
    through."""
    redis = connect_redis(f"redis://127.0.0.1:{free_port()}/0")
    try:
        limiter = RedisLoginLimiter(redis, "t", 2, 100, 60)
        assert await limiter.reserve("a@x.io", "10.0.0.1") == 0
        assert await limiter.reserve("a@x.io", "10.0.0.1") == 0
        assert await limiter.reserve("a@x.io", "10.0.0.1") > 0  # the third guess waits
        await limiter.release("b@x.io", "10.0.0.1")  # a success elsewhere is harmless
        assert await limiter.reserve("a@x.io", "10.0.0.2") > 0  # the account is still locked
        await limiter.refund("a@x.io", "10.0.0.1")  # an attempt that checked nothing
        assert await limiter.reserve("a@x.io", "10.0.0.1") == 0
        quota = RedisAttemptQuota(redis, "t")
        assert await quota.hit("register", "10.0.0.1", 1, 60) == 0
        assert await quota.hit("register", "10.0.0.1", 1, 60) > 0
    finally:
        await redis.aclose()
