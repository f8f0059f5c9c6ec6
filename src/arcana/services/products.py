"""Product catalog use cases, shared by REST and gRPC: open a unit of work, act, record
events, commit, then keep the cache honest and report admin writes to the audit sink.

Wire formats are not defined here. A transport hands its ``Encoding`` (the product JSON of
``api/product_json.py``, the protobuf of ``rpc/products.py``) to the read methods; the cache
keeps each encoding's bytes beside the others under the product's generation, so a hit costs
the same two cache reads in every format and no decoding at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from arcana.domain.audit import AuditEvent, AuditSink
from arcana.domain.ports import Cache, Clock, LocalCache, SystemClock
from arcana.domain.products import (
    QUANTITY_CHANGE,
    STOCK_MAX,
    NewProduct,
    Product,
    ProductChanges,
    ProductPage,
    ProductQuery,
    ProductStatus,
    ProductUnitOfWork,
    StockChange,
    StockChanges,
    parse_product_id,
    product_event,
    stock_events,
)
from arcana.errors import InsufficientStock, NotFound, ValidationFailed
from arcana.services.completion import runs_to_completion

log = logging.getLogger(__name__)

UowFactory = Callable[[], ProductUnitOfWork]


CATALOG = "catalog"
"""Generation key of the whole catalog (list totals)."""
LISTS = "lists"
"""Generation key of every cached list page: bumped by every product write, stock included
(a page shows each item's stock, a total does not)."""

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Encoding(Generic[T]):
    """A wire form of ``T`` (a ``Product`` or a ``ProductPage``) that the catalog caches as
    opaque bytes. ``name`` keeps the forms apart in the cache (``"json"``, ``"pb"``): it must
    be unique per form and change when the form changes."""

    name: str
    encode: Callable[[T], bytes]


def _list_key(query: ProductQuery) -> str:
    status = query.status.value if query.status is not None else ""
    raw = (
        f"{query.category or ''}\x00{status}\x00{query.name_contains or ''}"
        f"\x00{query.page}\x00{query.size}"
    )
    return hashlib.sha256(raw.encode(), usedforsecurity=False).hexdigest()[:32]


class ProductCache:
    """Cache-aside for get-by-id that is never stale after a write.

    Keys: ``product:<id>:v`` holds the product's current *generation* (a random token) and
    ``product:<id>:<generation>:<encoding>`` the product in one wire form (JSON, protobuf);
    every form of a product lives under the one generation, so one write retires them all. A
    reader reads the generation *before* loading the row and stores what it loaded only under
    that generation (``add``, never overwriting). Every committed write replaces the generation
    with a fresh token. So a slow
    reader that loaded the old row before a write can only put it under a generation nobody
    looks up any more: the read-populate race cannot resurrect old data. Random tokens (not a
    counter) mean a lost or expired generation key can never bring an old entry back (no ABA).

    A cache outage is a miss, never an error. If replacing the generation fails (Redis down at
    that moment, detected by reading it back), the product id is kept in ``_pending``: this
    process bypasses the cache for it and retries the replacement in the background until
    Redis answers again, so the old entry cannot be served once Redis is back. (Another process
    could serve it between Redis coming back and the retry, at most one retry interval.)
    """

    RETRY_INTERVAL = 0.5

    def __init__(
        self,
        cache: Cache,
        ttl: int,
        on_hit: Callable[[], None] | None = None,
        on_miss: Callable[[], None] | None = None,
    ) -> None:
        self._cache = cache
        self._ttl = ttl
        self._gen_ttl = ttl + 60  # outlives the entries stored under it
        self._on_hit = on_hit or (lambda: None)
        self._on_miss = on_miss or (lambda: None)
        self._pending: set[str] = set()
        self._retry_task: asyncio.Task[None] | None = None
        self._get_now = cache.get_now if isinstance(cache, LocalCache) else None

    @staticmethod
    def _gen_key(product_id: str) -> str:
        return f"product:{product_id}:v"

    async def existing_generation(self, product_id: str) -> str | None:
        """The generation if one is cached; never writes. A look-up of an id that may not
        exist reads with this first, so a flood of random ids adds no keys to the cache."""
        if product_id in self._pending:
            return None
        gen = await self._cache.get(self._gen_key(product_id))
        return gen.decode() if gen is not None else None

    async def claim_generation(self, product_id: str) -> str | None:
        """After loading an existing row without a cached generation: start one, and return
        it only if this call created it. Safe to populate under: a write that committed after
        the load replaced (or will replace) the generation, and if it already had, the key
        exists and this returns ``None``."""
        if product_id in self._pending:
            return None
        fresh = uuid.uuid4().hex
        if await self._cache.add(self._gen_key(product_id), fresh.encode(), self._gen_ttl):
            return fresh
        return None

    async def generation(self, product_id: str) -> str | None:
        """The generation to read and populate under; ``None``: do not use the cache now."""
        if product_id in self._pending:
            return None
        key = self._gen_key(product_id)
        gen = await self._cache.get(key)
        if gen is None:
            fresh = uuid.uuid4().hex.encode()
            if await self._cache.add(key, fresh, self._gen_ttl):
                gen = fresh
            else:
                gen = await self._cache.get(key)
                if gen is None:
                    return None
        return gen.decode()

    async def get(
        self, product_id: str, gen: str, form: str, count_miss: bool = True
    ) -> bytes | None:
        value = await self._cache.get(f"product:{product_id}:{gen}:{form}")
        if value is not None:
            self._on_hit()
        elif count_miss:
            self._on_miss()
        return value

    async def current(self, product_id: str, form: str) -> bytes | None:
        """``existing_generation`` then ``get`` (a miss not counted) in one call: the hot path
        of a cached read, where each awaited layer is a measurable part of the call."""
        if self._get_now is not None:
            return self.current_now(product_id, form)
        if product_id in self._pending:
            return None
        gen = await self._cache.get(f"product:{product_id}:v")
        if gen is None:
            return None
        value = await self._cache.get(f"product:{product_id}:{gen.decode()}:{form}")
        if value is not None:
            self._on_hit()
        return value

    def current_now(self, product_id: str, form: str) -> bytes | None:
        """``current`` without awaiting, for a cache in this process's memory; ``None`` on a
        miss and always with any other cache (the caller then awaits ``current``)."""
        get = self._get_now
        if get is None or product_id in self._pending:
            return None
        gen = get(f"product:{product_id}:v")
        if gen is None:
            return None
        value = get(f"product:{product_id}:{gen.decode()}:{form}")
        if value is not None:
            self._on_hit()
        return value

    async def populate(self, product_id: str, gen: str, form: str, value: bytes) -> None:
        await self._cache.add(f"product:{product_id}:{gen}:{form}", value, self._ttl)

    # List totals: ``count(*)`` is the expensive half of a list, so totals are cached under the
    # generation of the whole catalog (bumped by creates, deletes and updates, not by stock
    # changes), with the same read-generation-first rule. Their TTL is short because writes
    # that bypass this process's cache (``arcana demo-data`` beside an embedded server) cannot
    # bump an in-process generation.
    COUNT_TTL = 10

    async def get_count(self, gen: str, key: str) -> int | None:
        raw = await self._cache.get(f"product:count:{gen}:{key}")
        return int(raw) if raw is not None else None

    async def populate_count(self, gen: str, key: str, total: int) -> None:
        ttl = min(self._ttl, self.COUNT_TTL)
        await self._cache.add(f"product:count:{gen}:{key}", str(total).encode(), ttl)

    # Whole list pages (encoded bytes) under the ``LISTS`` generation, with the same rules and
    # the same short TTL as the totals.
    async def get_list(self, gen: str, form: str, key: str) -> bytes | None:
        value = await self._cache.get(f"product:list:{gen}:{form}:{key}")
        if value is not None:
            self._on_hit()
        return value

    async def populate_list(self, gen: str, form: str, key: str, body: bytes) -> None:
        ttl = min(self._ttl, self.COUNT_TTL)
        await self._cache.add(f"product:list:{gen}:{form}:{key}", body, ttl)

    async def invalidate(self, product_id: str) -> None:
        """After a commit: move the product to a fresh generation."""
        if not await self._bump(product_id):
            self._pending.add(product_id)
            if self._retry_task is None or self._retry_task.done():
                self._retry_task = asyncio.create_task(
                    self._retry_pending(), name="product-cache-invalidation"
                )

    async def _bump(self, product_id: str) -> bool:
        key = self._gen_key(product_id)
        token = uuid.uuid4().hex.encode()
        await self._cache.set(key, token, self._gen_ttl)
        # Read back: the port degrades errors to no-ops, so this is how a failed write shows.
        # Only our own token proves it: a failed ``set`` followed by a ``get`` that works (a
        # Redis just back) reads the *old* generation. A concurrent writer's newer token makes
        # this report a failure, and the retry bumps once more, which is harmless.
        return await self._cache.get(key) == token

    async def _retry_pending(self) -> None:
        while self._pending:
            await asyncio.sleep(self.RETRY_INTERVAL)
            for product_id in list(self._pending):
                if await self._bump(product_id):
                    self._pending.discard(product_id)

    @property
    def pending(self) -> frozenset[str]:
        return frozenset(self._pending)

    async def aclose(self) -> None:
        if self._retry_task is not None:
            self._retry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retry_task
            self._retry_task = None


class ProductService:
    EXPORT_BATCH = 1000

    def __init__(
        self,
        uow: UowFactory,
        cache: ProductCache,
        audit: AuditSink,
        clock: Clock | None = None,
        *,
        read_uow: UowFactory | None = None,
        stock: StockChanges | None = None,
    ) -> None:
        self._uow = uow
        self._stock = stock
        """Stock changes by group commit (embedded SQLite); ``None``: one unit of work each."""
        self._read_uow = read_uow or uow  # for reads: no transaction round trips
        self._list_builds: dict[tuple[str, str, str], asyncio.Future[bytes]] = {}
        """List pages being built, by (generation, encoding, page key): see ``list_encoded``."""
        self.cache = cache
        self._audit = audit
        self._clock = clock or SystemClock()

    # -- reads ------------------------------------------------------------------------------
    async def get_encoded(self, product_id: str, encoding: Encoding[Product]) -> bytes:
        """The product in ``encoding``, from the cache when possible. Malformed id → 422,
        missing → 404."""
        pid = parse_product_id(product_id)
        gen = await self.cache.existing_generation(pid)
        if gen is not None:
            cached = await self.cache.get(pid, gen, encoding.name)
            if cached is not None:
                return cached
        async with self._read_uow() as uow:
            product = await uow.products.get(pid)
        if product is None:
            # Nothing is written for a missing id: random ids cannot grow the cache.
            raise NotFound(f"Product {pid} not found")
        body = encoding.encode(product)
        if gen is None:
            gen = await self.cache.claim_generation(pid)
        if gen is not None:
            await self.cache.populate(pid, gen, encoding.name, body)
        return body

    async def cached_encoded(self, canonical_id: str, encoding: Encoding[Product]) -> bytes | None:
        """Hot path: the cached bytes of a product whose id is already canonical, or ``None``
        (the caller then takes ``get_encoded``, which counts the miss and loads the row)."""
        return await self.cache.current(canonical_id, encoding.name)

    def cached_encoded_now(self, canonical_id: str, encoding: Encoding[Product]) -> bytes | None:
        """``cached_encoded`` without awaiting when the cache is in this process's memory;
        ``None`` on a miss and with a shared cache (the caller then awaits
        ``cached_encoded``)."""
        return self.cache.current_now(canonical_id, encoding.name)

    async def list_encoded(self, query: ProductQuery, encoding: Encoding[ProductPage]) -> bytes:
        """A list page in ``encoding``: from the cache when this page was built since the last
        product write, else one rows query (plus a count unless the total is cached).

        Concurrent misses of one page under one generation share one build: when a cached
        page expires (its short TTL) every request for it misses at once, and each running
        its own count over the catalog stalled the loop (p99 160 to 240 ms at 64 connections on
        100,000 rows, ``make bench-http``). A request that read the generation before a write
        bumped it is concurrent with that write and may get either state; one that reads it
        after the bump gets a build of its own."""
        gen = await self.cache.generation(LISTS)
        key = _list_key(query)
        if gen is None:
            return encoding.encode(await self.list_products(query))
        cached = await self.cache.get_list(gen, encoding.name, key)
        if cached is not None:
            return cached
        flight = (gen, encoding.name, key)
        build = self._list_builds.get(flight)
        if build is None:
            build = asyncio.ensure_future(self._build_list(query, encoding, gen, key))
            self._list_builds[flight] = build
            build.add_done_callback(lambda _done: self._list_builds.pop(flight, None))
        # Shielded: a caller that goes away does not cancel the build the others wait for.
        return await asyncio.shield(build)

    async def _build_list(
        self, query: ProductQuery, encoding: Encoding[ProductPage], gen: str, key: str
    ) -> bytes:
        body = encoding.encode(await self.list_products(query))
        await self.cache.populate_list(gen, encoding.name, key, body)
        return body

    async def aclose(self) -> None:
        """At shutdown, once the servers have stopped: list builds still running for callers
        that went away (a deadline, a hang-up) are cancelled and awaited, so that none of them
        opens a database or Redis connection after those have closed; a build only fills the
        cache. Then the cache's own retries stop."""
        builds = list(self._list_builds.values())
        for build in builds:
            build.cancel()
        await asyncio.gather(*builds, return_exceptions=True)
        await self.cache.aclose()

    async def cached_list_encoded(
        self, query: ProductQuery, encoding: Encoding[ProductPage]
    ) -> bytes | None:
        """Hot path: the cached bytes of a list page, or ``None`` (then ``list_encoded``)."""
        gen = await self.cache.generation(LISTS)
        if gen is None:
            return None
        return await self.cache.get_list(gen, encoding.name, _list_key(query))

    async def list_products(self, query: ProductQuery) -> ProductPage:
        """One rows query, plus one count query unless the total is cached."""
        key = hashlib.sha256(
            f"{query.category}\x00{query.status}\x00{query.name_contains}".encode(),
            usedforsecurity=False,
        ).hexdigest()[:32]
        gen = await self.cache.generation(CATALOG)
        total = await self.cache.get_count(gen, key) if gen is not None else None
        async with self._read_uow() as uow:
            items, counted = await uow.products.page(query, with_total=total is None)
        if total is None:
            total = counted or 0
            if gen is not None:
                await self.cache.populate_count(gen, key, total)
        return ProductPage(items=items, total=total, page=query.page, size=query.size)

    async def export_batches(self, actor: str) -> AsyncIterator[list[Product]]:
        """The whole catalog in list order, in batches (keyset scan, one short transaction
        per batch). The export is audited as ``user.data_access`` / ``export``."""
        self._audit.emit(
            AuditEvent(
                event_type="user.data_access",
                user_id=actor,
                resource="products",
                action="export",
            )
        )
        after: tuple[datetime, str] | None = None
        while True:
            async with self._uow() as uow:
                batch = await uow.products.batch_after(after, self.EXPORT_BATCH)
            if not batch:
                return
            yield batch
            if len(batch) < self.EXPORT_BATCH:
                return
            after = (batch[-1].created_at, batch[-1].id)

    # -- writes -----------------------------------------------------------------------------
    @runs_to_completion
    async def create(self, actor: str, new: NewProduct) -> Product:
        now = self._clock.now()
        product = Product(
            id=str(uuid.uuid4()),
            name=new.name,
            description=new.description,
            price=new.price,
            stock=new.stock,
            category=new.category,
            status=ProductStatus.DRAFT,
            created_at=now,
            updated_at=now,
        )
        async with self._uow() as uow:
            await uow.products.add(product)
            uow.record(product_event("product.created", product.id))
            await uow.commit()
        await self.cache.invalidate(CATALOG)
        await self.cache.invalidate(LISTS)
        self._audited(actor, product.id, "create")
        return product

    @runs_to_completion
    async def create_many(self, items: Sequence[NewProduct], status: ProductStatus) -> int:
        """Bulk insert in one transaction (demo data): no events and no audit, the products
        did not come from a user action."""
        now = self._clock.now()
        rows = [
            Product(
                id=str(uuid.uuid4()),
                name=n.name,
                description=n.description,
                price=n.price,
                stock=n.stock,
                category=n.category,
                status=status,
                created_at=now,
                updated_at=now,
            )
            for n in items
        ]
        async with self._uow() as uow:
            await uow.products.add_many(rows)
            await uow.commit()
        await self.cache.invalidate(CATALOG)
        await self.cache.invalidate(LISTS)
        return len(rows)

    @runs_to_completion
    async def update(self, actor: str, product_id: str, changes: ProductChanges) -> Product:
        pid = parse_product_id(product_id)
        async with self._uow() as uow:
            current = await uow.products.get_for_update(pid)
            if current is None:
                raise NotFound(f"Product {pid} not found")
            updated = current.with_changes(changes, self._clock.now())
            await uow.products.save(updated)
            uow.record(product_event("product.updated", pid))
            uow.record(*stock_events(pid, current.stock, updated.stock))
            await uow.commit()
        await self.cache.invalidate(pid)
        await self.cache.invalidate(LISTS)
        if (updated.category, updated.status) != (current.category, current.status):
            await self.cache.invalidate(CATALOG)
        self._audited(actor, pid, "update")
        return updated

    @runs_to_completion
    async def adjust_stock(self, actor: str, product_id: str, quantity_change: int) -> Product:
        pid = parse_product_id(product_id)
        QUANTITY_CHANGE.check(quantity_change)
        now = self._clock.now()
        if self._stock is not None:
            change = await self._stock.adjust_stock(
                pid,
                quantity_change,
                now,
                product_event("product.updated", pid),
                functools.partial(stock_events, pid),
            )
        else:
            change = await self._adjust_stock_in_uow(pid, quantity_change, now)
        product = change.product
        if product is None:
            if not change.exists:
                raise NotFound(f"Product {pid} not found")
            if quantity_change > 0:
                raise ValidationFailed(
                    field=QUANTITY_CHANGE.field, message=f"would take stock above {STOCK_MAX}"
                )
            raise InsufficientStock(
                f"Insufficient stock: a change of {quantity_change} would go below 0"
            )
        await self.cache.invalidate(pid)
        await self.cache.invalidate(LISTS)
        self._audited(actor, pid, "stock", quantity_change=quantity_change)
        return product

    async def _adjust_stock_in_uow(self, pid: str, delta: int, now: datetime) -> StockChange:
        async with self._uow() as uow:
            # The outbox row goes in before the UPDATE: the row lock is then held only for the
            # COMMIT round trip (and a rare stock-event insert), not for the insert as well.
            # A refused change leaves without committing, which takes the row away again.
            uow.record(product_event("product.updated", pid))
            await uow.write_recorded()
            product = await uow.products.adjust_stock(pid, delta, now)
            if product is None:
                return StockChange(None, await uow.products.exists(pid))
            uow.record(*stock_events(pid, product.stock - delta, product.stock))
            await uow.commit()
        return StockChange(product, True)

    @runs_to_completion
    async def delete(self, actor: str, product_id: str) -> None:
        pid = parse_product_id(product_id)
        async with self._uow() as uow:
            if not await uow.products.delete(pid):
                raise NotFound(f"Product {pid} not found")
            uow.record(product_event("product.deleted", pid))
            await uow.commit()
        await self.cache.invalidate(pid)
        await self.cache.invalidate(CATALOG)
        await self.cache.invalidate(LISTS)
        self._audited(actor, pid, "delete")

    def _audited(self, actor: str, product_id: str, action: str, **metadata: Any) -> None:
        self._audit.emit(
            AuditEvent(
                event_type="admin.config_change",
                user_id=actor,
                resource=f"product:{product_id}",
                action=action,
                metadata=metadata,
            )
        )
