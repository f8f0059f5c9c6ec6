"""The catalog use cases through in-memory ports: stock events, the cache kept honest after
writes, and the reactions the recorded events cause downstream."""

from __future__ import annotations

import asyncio
import pickle
from dataclasses import dataclass
from decimal import Decimal

import pytest

from arcana.domain.products import NewProduct, Product, ProductChanges, ProductQuery
from arcana.errors import InsufficientStock, NotFound, ValidationFailed
from arcana.services.events import (
    ADMIN_STOCK_NOTICE_JOB,
    WELCOME_EMAIL_JOB,
    build_event_handlers,
    job_id_for,
)
from arcana.services.products import Encoding, ProductCache, ProductService
from arcana.services.users import TokenGenerationCache, UserService
from tests.fakes import (
    FakeClock,
    GatedCache,
    InMemoryCache,
    InMemoryJobQueue,
    InMemoryStore,
    InMemoryUnitOfWorkFactory,
    PlainPasswordHasher,
    RecordingAuditSink,
)

ADMIN = "admin-1"
PICKLED: Encoding[Product] = Encoding("pickle", pickle.dumps)
"""A wire form for the tests: it decodes back to the very ``Product`` that was cached."""
REPR: Encoding[Product] = Encoding("repr", lambda p: repr(p).encode())


@dataclass
class Catalog:
    service: ProductService
    uow: InMemoryUnitOfWorkFactory
    store: InMemoryStore
    cache: InMemoryCache
    clock: FakeClock
    audit: RecordingAuditSink

    async def create(self, stock: int = 50, **fields: object) -> Product:
        new = NewProduct.build(name="Lamp", price=Decimal("19.99"), stock=stock, **fields)
        return await self.service.create(ADMIN, new)

    async def get(self, product_id: str) -> Product:
        loaded: Product = pickle.loads(await self.service.get_encoded(product_id, PICKLED))
        return loaded

    def event_types(self) -> list[str]:
        return [e.event_type for e in self.store.events]


@pytest.fixture
def catalog() -> Catalog:
    clock = FakeClock()
    uow = InMemoryUnitOfWorkFactory()
    cache = InMemoryCache(clock)
    audit = RecordingAuditSink()
    service = ProductService(uow, ProductCache(cache, ttl=300), audit, clock=clock)
    return Catalog(service, uow, uow.store, cache, clock, audit)


# -- stock events -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("start", "change", "events"),
    [
        (50, -5, ["product.updated"]),
        (50, -40, ["product.updated", "product.low_stock"]),
        (5, -1, ["product.updated", "product.low_stock"]),  # every change that stays low
        (5, -5, ["product.updated", "product.out_of_stock"]),
        (0, 11, ["product.updated"]),
        (0, 3, ["product.updated", "product.low_stock"]),
    ],
)
async def test_stock_changes_record_their_events(
    catalog: Catalog, start: int, change: int, events: list[str]
) -> None:
    product = await catalog.create(stock=start)
    catalog.store.events.clear()
    updated = await catalog.service.adjust_stock(ADMIN, product.id, change)
    assert updated.stock == start + change
    assert catalog.event_types() == events
    low = catalog.store.events_of("product.low_stock")
    if low:
        assert low[0].data == {"productId": product.id, "stock": start + change}


async def test_a_stock_change_below_zero_changes_nothing(catalog: Catalog) -> None:
    product = await catalog.create(stock=2)
    catalog.store.events.clear()
    with pytest.raises(InsufficientStock):
        await catalog.service.adjust_stock(ADMIN, product.id, -3)
    assert catalog.store.products[product.id].stock == 2
    assert catalog.store.events == []
    with pytest.raises(NotFound):
        await catalog.service.adjust_stock(ADMIN, "00000000-0000-4000-8000-000000000000", 1)
    with pytest.raises(ValidationFailed):
        await catalog.service.adjust_stock(ADMIN, product.id, True)  # type: ignore[arg-type]


async def test_an_update_that_sets_stock_records_the_same_events(catalog: Catalog) -> None:
    product = await catalog.create(stock=50)
    catalog.store.events.clear()
    await catalog.service.update(ADMIN, product.id, ProductChanges.build({"stock": 0}))
    assert catalog.event_types() == ["product.updated", "product.out_of_stock"]


async def test_writes_are_timed_by_the_clock_and_audited(catalog: Catalog) -> None:
    product = await catalog.create()
    assert product.created_at == catalog.clock.now()
    catalog.clock.advance(90)
    updated = await catalog.service.adjust_stock(ADMIN, product.id, -1)
    assert updated.updated_at == catalog.clock.now()
    assert updated.created_at == product.created_at
    assert [(e.action, e.user_id) for e in catalog.audit.events] == [
        ("create", ADMIN),
        ("stock", ADMIN),
    ]


# -- cache ----------------------------------------------------------------------------------------
async def test_reads_are_served_from_the_cache_until_a_write(catalog: Catalog) -> None:
    product = await catalog.create(stock=50)
    repo = catalog.uow.products
    first = await catalog.get(product.id)
    reads = repo.reads
    assert await catalog.get(product.id) == first
    assert repo.reads == reads  # the second read never reached storage
    await catalog.service.adjust_stock(ADMIN, product.id, -8)
    assert (await catalog.get(product.id)).stock == 42  # never the stale 50
    assert repo.reads == reads + 1


async def test_a_write_whose_caller_is_cancelled_after_commit_still_retires_the_cache() -> None:
    clock = FakeClock()
    uow = InMemoryUnitOfWorkFactory()
    cache = GatedCache(clock)
    service = ProductService(uow, ProductCache(cache, ttl=300), RecordingAuditSink(), clock=clock)
    product = await service.create(
        ADMIN, NewProduct.build(name="Lamp", price=Decimal("1.00"), stock=50)
    )
    assert pickle.loads(await service.get_encoded(product.id, PICKLED)).stock == 50
    cache.close_gate()
    # The client hangs up once the change is committed and its cache bump is under way.
    caller = asyncio.create_task(service.adjust_stock(ADMIN, product.id, -8))
    await asyncio.wait_for(cache.waiting.wait(), 5)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    cache.gate.set()

    async def fresh_stock() -> int:
        return int(pickle.loads(await service.get_encoded(product.id, PICKLED)).stock)

    async with asyncio.timeout(5):
        while await fresh_stock() != 42:  # the abandoned write finishes its bump
            await asyncio.sleep(0.01)
    assert uow.store.products[product.id].stock == 42


async def test_each_wire_form_is_cached_and_one_write_retires_them_all(catalog: Catalog) -> None:
    product = await catalog.create(stock=50)
    repo = catalog.uow.products
    first = await catalog.get(product.id)
    as_text = await catalog.service.get_encoded(product.id, REPR)
    assert as_text == repr(first).encode()
    reads = repo.reads
    assert await catalog.service.get_encoded(product.id, REPR) == as_text
    assert await catalog.get(product.id) == first
    assert repo.reads == reads  # both forms are served from the cache
    assert await catalog.service.cached_encoded(product.id, REPR) == as_text
    await catalog.service.adjust_stock(ADMIN, product.id, -8)
    assert await catalog.service.cached_encoded(product.id, REPR) is None
    assert await catalog.service.cached_encoded(product.id, PICKLED) is None
    assert b"stock=42" in await catalog.service.get_encoded(product.id, REPR)
    assert (await catalog.get(product.id)).stock == 42


class CountingCache:
    """The ``Cache`` port over ``InMemoryCache``, counting round trips by operation."""

    def __init__(self, inner: InMemoryCache) -> None:
        self.inner = inner
        self.calls: list[str] = []

    async def get(self, key: str) -> bytes | None:
        self.calls.append("get")
        return await self.inner.get(key)

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        self.calls.append("set")
        await self.inner.set(key, value, ttl)

    async def add(self, key: str, value: bytes, ttl: int) -> bool:
        self.calls.append("add")
        return await self.inner.add(key, value, ttl)

    async def delete(self, *keys: str) -> None:
        self.calls.append("delete")
        await self.inner.delete(*keys)

    async def ping(self) -> bool:
        return await self.inner.ping()


async def test_a_hit_costs_two_cache_reads_and_no_storage_read_in_any_form() -> None:
    clock = FakeClock()
    uow = InMemoryUnitOfWorkFactory()
    cache = CountingCache(InMemoryCache(clock))
    service = ProductService(uow, ProductCache(cache, ttl=300), RecordingAuditSink(), clock=clock)
    new = NewProduct.build(name="Lamp", price=Decimal("19.99"))
    product = await service.create(ADMIN, new)
    for form in (PICKLED, REPR):
        cache.calls.clear()
        reads = uow.products.reads
        miss = await service.get_encoded(product.id, form)
        assert uow.products.reads == reads + 1  # one row load per form and generation
        cache.calls.clear()
        assert await service.get_encoded(product.id, form) == miss
        assert await service.cached_encoded(product.id, form) == miss
        assert cache.calls == ["get", "get"] * 2  # generation, then the entry
        assert uow.products.reads == reads + 1


async def test_cached_entries_expire_by_the_clock(catalog: Catalog) -> None:
    product = await catalog.create()
    await catalog.get(product.id)
    reads = catalog.uow.products.reads
    catalog.clock.advance(301)
    await catalog.get(product.id)
    assert catalog.uow.products.reads == reads + 1


async def test_a_cache_outage_is_a_miss_not_an_error(catalog: Catalog) -> None:
    product = await catalog.create()
    catalog.cache.down = True
    assert (await catalog.get(product.id)).price == Decimal("19.99")
    page = await catalog.service.list_products(ProductQuery.build())
    assert page.total == 1


async def test_list_totals_are_cached_per_filter_and_dropped_by_creates(catalog: Catalog) -> None:
    await catalog.create(category="lamps")
    await catalog.create(category="chairs")
    lamps = ProductQuery.build(category="lamps")
    assert (await catalog.service.list_products(lamps)).total == 1
    await catalog.create(category="lamps")
    page = await catalog.service.list_products(lamps)
    assert page.total == 2
    assert [p.category for p in page.items] == ["lamps", "lamps"]


# -- reactions: the two flows of docs/ARCHITECTURE.md, up to the queued job -------------------
async def _deliver(store: InMemoryStore, jobs: InMemoryJobQueue, times: int = 1) -> None:
    handlers = build_event_handlers(jobs)
    for _ in range(times):  # delivery is at least once
        for event in store.events:
            await handlers.dispatch(event.envelope())


async def test_a_stock_drop_to_zero_queues_one_admin_notice(catalog: Catalog) -> None:
    product = await catalog.create(stock=3)
    await catalog.service.adjust_stock(ADMIN, product.id, -3)
    jobs = InMemoryJobQueue()
    await _deliver(catalog.store, jobs, times=2)
    [notice] = jobs.of_type(ADMIN_STOCK_NOTICE_JOB)
    assert notice.payload == {
        "productId": product.id,
        "stock": 0,
        "event_type": "product.out_of_stock",
    }
    [event] = catalog.store.events_of("product.out_of_stock")
    assert job_id_for(event.id, ADMIN_STOCK_NOTICE_JOB) in jobs.jobs


async def test_registration_queues_one_welcome_mail() -> None:
    clock = FakeClock()
    uow = InMemoryUnitOfWorkFactory()
    hasher = PlainPasswordHasher()
    users = UserService(
        uow, hasher, TokenGenerationCache(uow, InMemoryCache(clock), 60, clock), clock
    )
    user = await users.create_user("ada@example.com", "Ada", "Correct-Horse-9")
    jobs = InMemoryJobQueue()
    await _deliver(uow.store, jobs, times=3)
    assert jobs.calls == 3
    [welcome] = jobs.of_type(WELCOME_EMAIL_JOB)
    assert welcome.payload == {"user_id": user.id, "email": "ada@example.com", "name": "Ada"}


async def test_concurrent_misses_of_one_list_page_share_one_build(catalog: Catalog) -> None:
    """When a cached page expires every request for it misses at once: they share one build
    (one rows query, one count) instead of each running its own; a write in between starts a
    build of its own for the requests that come after it."""
    from arcana.api.product_json import PAGE_JSON

    await catalog.create()
    query = ProductQuery.build(page=0, size=10)
    calls = 0
    factory = catalog.uow
    original = factory.__call__

    def counting() -> object:
        uow = original()
        page = uow.products.page
        if getattr(page, "counted", False):  # the fake's repository is shared: wrapped once
            return uow

        async def counted(*args: object, **kwargs: object) -> object:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0)  # let the other requests arrive while it runs
            return await page(*args, **kwargs)

        counted.counted = True  # type: ignore[attr-defined]
        uow.products.page = counted
        return uow

    catalog.service._read_uow = counting  # type: ignore[assignment]
    bodies = await asyncio.gather(
        *(catalog.service.list_encoded(query, PAGE_JSON) for _ in range(20))
    )
    assert calls == 1
    assert len(set(bodies)) == 1
    catalog.clock.advance(ProductCache.COUNT_TTL + 1)  # the page expires
    await asyncio.gather(*(catalog.service.list_encoded(query, PAGE_JSON) for _ in range(20)))
    assert calls == 2
    second = await catalog.create()  # bumps the lists' generation
    after = await catalog.service.list_encoded(query, PAGE_JSON)
    assert calls == 3
    assert second.id.encode() in after
