"""Concurrency and cache correctness of the catalog: no oversell, never a stale read."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from arcana.adapters.tables import outbox
from arcana.api.app import create_app
from arcana.api.product_json import PRODUCT_JSON
from arcana.bootstrap import App
from arcana.domain.ports import Cache
from arcana.domain.products import ProductChanges
from arcana.lifecycle import Lifecycle
from arcana.services.products import ProductCache, ProductService
from tests.conftest import base_settings, insert_principals, truncate_all, wait_for
from tests.private_redis import PrivateRedis
from tests.products_support import BASE, admin_headers, concurrent_stock_changes, create_product

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.usefixtures("seeded_principals"),
]


async def test_concurrent_decrements_never_oversell(
    client: httpx.AsyncClient, container: App
) -> None:
    p = await create_product(client, container, stock=25)
    headers = admin_headers(container)

    async def decrement() -> int:
        r = await client.post(
            f"{BASE}/{p['id']}/stock", json={"quantity_change": -1}, headers=headers
        )
        return r.status_code

    codes = await asyncio.gather(*(decrement() for _ in range(40)))
    assert codes.count(200) == 25
    assert codes.count(422) == 15
    assert (await client.get(f"{BASE}/{p['id']}")).json()["stock"] == 0
    async with container.uow() as uow:
        stored = await uow.products.get(p["id"])
    assert stored is not None
    assert stored.stock == 0


async def outbox_event_counts(container: App, product_id: str) -> dict[str, int]:
    """How many outbox rows of each event type the product has."""
    async with container.db.engine.connect() as conn:
        rows = await conn.execute(
            select(outbox.c.event_type, func.count())
            .where(outbox.c.aggregate_id == product_id)
            .group_by(outbox.c.event_type)
        )
        return {str(t): int(n) for t, n in rows}


async def test_each_stored_stock_change_has_its_events_and_a_refused_one_none(
    client: httpx.AsyncClient, container: App
) -> None:
    """At-least-once: the outbox rows of a change commit with it (group commit on SQLite, one
    statement on PostgreSQL); a refused change leaves none behind."""
    p = await create_product(client, container, stock=12)
    codes = await concurrent_stock_changes(client, container, p["id"], -1, 15)
    assert codes.count(200) == 12
    assert codes.count(422) == 3
    events = await outbox_event_counts(container, p["id"])
    # 12 changes stored; 10 of them left 1..10 in stock, the last one 0 (contract §8).
    assert events == {
        "product.created": 1,
        "product.updated": 12,
        "product.low_stock": 10,
        "product.out_of_stock": 1,
    }


async def test_concurrent_changes_across_the_low_stock_line_keep_every_event(
    client: httpx.AsyncClient, container: App
) -> None:
    """On PostgreSQL the changes that leave 11 or more are one autocommitted statement each and
    the ones below take a transaction with their level event: run at once, on one row, they
    neither oversell nor lose or duplicate an event (none for the refused ones)."""
    p = await create_product(client, container, stock=30)
    codes = await concurrent_stock_changes(client, container, p["id"], -1, 40)
    assert codes.count(200) == 30
    assert codes.count(422) == 10
    assert (await client.get(f"{BASE}/{p['id']}")).json()["stock"] == 0
    events = await outbox_event_counts(container, p["id"])
    assert events == {
        "product.created": 1,
        "product.updated": 30,
        "product.low_stock": 10,
        "product.out_of_stock": 1,
    }


class GatedCache:
    """The real cache with a gate before the populating ``add`` of product entries: lets a
    test hold a reader after it loaded the row and before it writes the cache."""

    def __init__(self, inner: Cache) -> None:
        self.inner = inner
        self.loaded = asyncio.Event()
        self.release = asyncio.Event()
        self.armed = False

    async def get(self, key: str) -> bytes | None:
        return await self.inner.get(key)

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        await self.inner.set(key, value, ttl)

    async def add(self, key: str, value: bytes, ttl: int) -> bool:
        if self.armed and not key.endswith(":v"):
            self.armed = False
            self.loaded.set()
            await self.release.wait()
        return await self.inner.add(key, value, ttl)

    async def delete(self, *keys: str) -> None:
        await self.inner.delete(*keys)

    async def ping(self) -> bool:
        return await self.inner.ping()


async def test_slow_reader_cannot_resurrect_old_row(
    client: httpx.AsyncClient, container: App
) -> None:
    p = await create_product(client, container, name="Old name")
    gated = GatedCache(container.cache)
    service = ProductService(
        container.uow, ProductCache(gated, container.settings.cache.ttl), container.audit
    )
    gated.armed = True
    reader = asyncio.create_task(service.get_encoded(p["id"], PRODUCT_JSON))
    await asyncio.wait_for(gated.loaded.wait(), 10)  # the reader holds the old row
    await service.update("admin", p["id"], ProductChanges.build({"name": "New name"}))
    gated.release.set()
    stale = await reader
    assert b"Old name" in stale  # it read before the write: fine to answer, not to cache
    fresh = await service.get_encoded(p["id"], PRODUCT_JSON)
    assert b"New name" in fresh
    # and the shared service (same cache) agrees
    assert (await client.get(f"{BASE}/{p['id']}")).json()["name"] == "New name"


async def test_reads_after_each_write_are_fresh(client: httpx.AsyncClient, container: App) -> None:
    admin = admin_headers(container)
    p = await create_product(client, container, stock=50)
    url = f"{BASE}/{p['id']}"
    for i in range(5):
        assert (await client.get(url)).status_code == 200
        await client.patch(url, json={"name": f"n{i}"}, headers=admin)
        assert (await client.get(url)).json()["name"] == f"n{i}"
        await client.post(f"{url}/stock", json={"quantity_change": -1}, headers=admin)
        assert (await client.get(url)).json()["stock"] == 50 - i - 1


async def test_list_pages_are_fresh_after_each_write(
    client: httpx.AsyncClient, container: App
) -> None:
    """List pages are cached whole (and answered before routing on a hit): every kind of
    write, a stock change included, shows in the next read of a page that was cached."""
    admin = admin_headers(container)
    p = await create_product(client, container, stock=50)
    url = f"{BASE}/{p['id']}"
    page_url = f"{BASE}?size=100"

    async def listed() -> dict[str, object]:
        body = (await client.get(page_url)).json()
        return next(item for item in body["data"] if item["id"] == p["id"])

    for i in range(3):
        assert (await listed())["stock"] == 50 - i  # cached now
        assert (await client.get(page_url)).content == (await client.get(page_url)).content
        r = await client.post(f"{url}/stock", json={"quantity_change": -1}, headers=admin)
        assert r.status_code == 200
        assert (await listed())["stock"] == 50 - i - 1
        await client.patch(url, json={"name": f"listed {i}"}, headers=admin)
        assert (await listed())["name"] == f"listed {i}"
    total = (await client.get(page_url)).json()["total"]
    await client.delete(url, headers=admin)
    after = (await client.get(page_url)).json()
    assert after["total"] == total - 1
    assert all(item["id"] != p["id"] for item in after["data"])


async def test_only_plain_list_queries_take_the_fast_path() -> None:
    """Anything the route would have to decode or refuse goes to the route."""
    from arcana.api.products import _simple_list_query

    assert _simple_list_query(b"") is not None
    q = _simple_list_query(b"page=2&size=10&category=toys&status=active")
    assert q is not None
    assert (q.page, q.size, q.category, q.status) == (2, 10, "toys", q.status)
    for raw in (
        b"size=0",
        b"size=101",
        b"page=-1",
        b"page=+1",
        b"size=1&size=2",
        b"category=a%20b",
        b"status=nope",
        b"sort=name",
        b"page",
    ):
        assert _simple_list_query(raw) is None, raw


@contextlib.contextmanager
def private_redis(tmp: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A ``redis-server`` of the test's own, answering ``PING``: (its URL, its process)."""
    server = PrivateRedis(tmp / "private-redis")
    server.start()
    assert server.proc is not None
    try:
        yield server.url, server.proc
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def app_on_private_redis(
    pg_url: str, tmp_path: Path
) -> AsyncIterator[tuple[App, httpx.AsyncClient, str, subprocess.Popen[bytes]]]:
    """The app on PostgreSQL and a private Redis the test may stop, pause or restart."""
    await truncate_all(pg_url)
    with private_redis(tmp_path) as (url, proc):
        settings = base_settings(database_url=pg_url, redis_url=url, var_dir=tmp_path / "var")
        process = Lifecycle.build(settings)
        container = process.app
        await process.start(migrate_embedded=False)
        await insert_principals(container)
        try:
            assert container.redis is not None
            redis = container.redis

            async def redis_up() -> bool:
                try:
                    return bool(await redis.ping())
                except Exception:
                    return False

            await wait_for(redis_up)
            transport = httpx.ASGITransport(app=create_app(container), raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                yield container, client, url, proc
        finally:
            await process.stop()


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_redis_down_reads_still_served(backend: str, pg_url: str, tmp_path: Path) -> None:
    async with app_on_private_redis(pg_url, tmp_path) as (container, client, _redis_url, proc):
        p = await create_product(client, container, name="Before")
        url = f"{BASE}/{p['id']}"
        assert (await client.get(url)).json()["name"] == "Before"
        assert (await client.get(url)).json()["name"] == "Before"  # cached in Redis
        proc.terminate()
        proc.wait(10)
        r = await client.get(url)
        assert r.status_code == 200
        assert r.json()["name"] == "Before"
        r = await client.patch(url, json={"name": "During"}, headers=admin_headers(container))
        assert r.status_code == 200
        assert p["id"] in container.products.cache.pending  # invalidation owed
        assert (await client.get(url)).json()["name"] == "During"
        r = await client.get(BASE)
        assert r.status_code == 200


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_invalidation_owed_during_outage_is_paid_when_redis_returns(
    backend: str, pg_url: str, tmp_path: Path
) -> None:
    """Redis is down exactly while a write invalidates: when Redis comes back with the old
    entry still in it, the owed invalidation runs before any reader can trust it."""
    async with app_on_private_redis(pg_url, tmp_path) as (container, client, url, proc):
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        p = await create_product(client, container, name="Old")
        url_p = f"{BASE}/{p['id']}"
        await client.get(url_p)  # populate
        # Pause Redis (SIGSTOP keeps its data, like a network partition).
        proc.send_signal(19)
        try:
            r = await client.patch(url_p, json={"name": "New"}, headers=admin_headers(container))
            assert r.status_code == 200
            assert p["id"] in container.products.cache.pending
            assert (await client.get(url_p)).json()["name"] == "New"
        finally:
            proc.send_signal(18)
        await wait_for(lambda: p["id"] not in container.products.cache.pending)
        assert (await client.get(url_p)).json()["name"] == "New"
        assert port > 0
