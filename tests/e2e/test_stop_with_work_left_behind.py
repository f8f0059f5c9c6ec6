"""A stop while work whose caller went away is still running (real PostgreSQL and Redis).

A list build is shared by every request for the page and goes on when one of them leaves (a
deadline, a hang-up); a write goes on to its commit and cache update. Neither may outlive the
pools it runs on: the stop cancels the builds and waits, up to ``ARCANA_SHUTDOWN_TIMEOUT``,
for the writes. A table lock held by the test keeps that work in flight for as long as the
test needs, and ``pg_stat_activity`` shows when it is waiting on the lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from arcana.api.product_json import PAGE_JSON
from arcana.bootstrap import App
from arcana.domain.products import NewProduct, ProductChanges, ProductQuery
from arcana.lifecycle import Lifecycle
from tests.conftest import REDIS_URL, base_settings, truncate_all, wait_for

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.postgres]


def dsn(pg_url: str) -> str:
    return pg_url.replace("postgresql+asyncpg://", "postgresql://")


@pytest.fixture
async def start(
    pg_url: str, redis_session: str, tmp_path: Path
) -> AsyncIterator[Callable[[float], Awaitable[Lifecycle]]]:
    """``await start(shutdown_timeout)``: a started process. Each test stops it itself; the
    second stop at the end is for a test that failed first."""
    started: list[Lifecycle] = []

    async def start(shutdown_timeout: float) -> Lifecycle:
        await truncate_all(pg_url)
        settings = base_settings(
            database_url=pg_url,
            redis_url=REDIS_URL,
            redis_prefix=f"{redis_session}-stop-{uuid.uuid4().hex[:8]}",
            var_dir=tmp_path / "var",
            shutdown_timeout=shutdown_timeout,
        )
        started.append(Lifecycle.build(settings))
        await started[-1].start(migrate_embedded=False)
        return started[-1]

    yield start
    for process in started:
        await process.stop()


@contextlib.asynccontextmanager
async def products_locked(pg_url: str) -> AsyncIterator[asyncpg.Connection]:
    """``products`` locked against reads and writes until the block ends."""
    conn = await asyncpg.connect(dsn(pg_url))
    try:
        tx = conn.transaction()
        await tx.start()
        await conn.execute("LOCK TABLE products IN ACCESS EXCLUSIVE MODE")
        try:
            yield conn
        finally:
            await tx.rollback()
    finally:
        await conn.close()


async def waiting_on_the_lock(probe: asyncpg.Connection) -> bool:
    """Whether a session waits on a lock (``probe`` holds the lock, so it is inside a
    transaction: its statistics snapshot is cleared first)."""
    await probe.execute("SELECT pg_stat_clear_snapshot()")
    n = await probe.fetchval(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    return bool(n)


async def abandon_a_rename(app: App, product_id: str, lock: asyncpg.Connection) -> None:
    """A rename whose caller is cancelled while it waits on ``lock``."""
    caller = asyncio.create_task(
        app.products.update("admin", product_id, ProductChanges(name="After"))
    )
    await wait_for(lambda: waiting_on_the_lock(lock))
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller


async def stored_name(pg_url: str, product_id: str) -> str:
    conn = await asyncpg.connect(dsn(pg_url))
    try:
        return str(await conn.fetchval("SELECT name FROM products WHERE id = $1", product_id))
    finally:
        await conn.close()


def running(qualname: str) -> list[asyncio.Task[object]]:
    return [
        t
        for t in asyncio.all_tasks()
        if not t.done() and getattr(t.get_coro(), "__qualname__", "") == qualname
    ]


async def test_a_list_build_whose_caller_left_is_over_when_stop_returns(
    start: Callable[[float], Awaitable[Lifecycle]], pg_url: str
) -> None:
    """Before, the build ran on past the stop and opened a Redis connection on the closed
    client, which nothing closed."""
    lifecycle = await start(30)
    app = lifecycle.app
    async with products_locked(pg_url) as lock:
        caller = asyncio.create_task(app.products.list_encoded(ProductQuery(), PAGE_JSON))
        await wait_for(lambda: waiting_on_the_lock(lock))
        builds = running("ProductService._build_list")
        assert len(builds) == 1
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert not builds[0].done()  # the build goes on without its caller
        await asyncio.wait_for(lifecycle.stop(), 30)
        assert builds[0].done()
        assert running("ProductService._build_list") == []


async def test_stop_waits_for_a_write_whose_caller_left(
    start: Callable[[float], Awaitable[Lifecycle]],
    pg_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The write commits and updates the cache before the pools close."""
    lifecycle = await start(30)
    product = await lifecycle.app.products.create("admin", NewProduct("Before", Decimal(1)))
    with caplog.at_level(logging.WARNING, logger="arcana.services.completion"):
        async with products_locked(pg_url) as lock:
            await abandon_a_rename(lifecycle.app, product.id, lock)
            stopping = asyncio.create_task(lifecycle.stop())
            await wait_for(
                lambda: any("whose caller went away" in r.getMessage() for r in caplog.records)
            )
            assert not stopping.done()
        await asyncio.wait_for(stopping, 30)  # the lock is gone: the write ends, then the stop
    assert running("ProductService.update") == []
    assert await stored_name(pg_url, product.id) == "After"
    assert not any(r.levelno >= logging.ERROR for r in caplog.records)


async def test_stop_cancels_a_write_still_waiting_after_the_shutdown_timeout(
    start: Callable[[float], Awaitable[Lifecycle]],
    pg_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    lifecycle = await start(0.5)
    product = await lifecycle.app.products.create("admin", NewProduct("Before", Decimal(1)))
    with caplog.at_level(logging.WARNING, logger="arcana.services.completion"):
        async with products_locked(pg_url) as lock:
            await abandon_a_rename(lifecycle.app, product.id, lock)
            await asyncio.wait_for(lifecycle.stop(), 30)  # the lock still held: bounded
            assert any(
                "1 write(s) whose caller went away were still running at shutdown: cancelled"
                in r.getMessage()
                for r in caplog.records
            )
            assert running("ProductService.update") == []
    assert await stored_name(pg_url, product.id) == "Before"  # rolled back, not half done
