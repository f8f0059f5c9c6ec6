"""Round trips per stock change on PostgreSQL, counted on the wire (``tests/pg_wire.py``): a
count, not a time, so it holds on a loaded machine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

from arcana.adapters.tables import outbox, products
from arcana.domain.products import STOCK_MAX, NewProduct
from arcana.errors import ServiceUnavailable
from arcana.lifecycle import Lifecycle
from tests.conftest import base_settings, end_server_sessions, truncate_all
from tests.pg_wire import WireCounter

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
async def proxied(pg_url: str, tmp_path: Path) -> AsyncIterator[tuple[Lifecycle, WireCounter]]:
    """A process on this run's database (no Redis), its connections through the counter."""
    await truncate_all(pg_url)
    parts = urlsplit(pg_url)
    async with WireCounter(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        url = f"postgresql+asyncpg://{parts.username}@127.0.0.1:{proxy.port}{parts.path}"
        settings = base_settings(database_url=f"{url}?ssl=disable", var_dir=tmp_path / "var")
        async with Lifecycle.running(settings, migrate_embedded=False) as process:
            # As under ``arcana serve``, whose relay these commits wake in-process (so they
            # send no NOTIFY). The relay itself is not started: its statements would be
            # counted with the changes'.
            process.app.db.local_relay = True
            yield process, proxy


async def stored_stock(process: Lifecycle, product_id: str) -> int:
    async with process.app.db.engine.connect() as conn:
        stock = await conn.scalar(select(products.c.stock).where(products.c.id == product_id))
    assert stock is not None
    return int(stock)


async def updated_events(process: Lifecycle, product_id: str) -> int:
    async with process.app.db.engine.connect() as conn:
        return int(
            await conn.scalar(
                select(func.count())
                .select_from(outbox)
                .where(
                    outbox.c.aggregate_id == product_id,
                    outbox.c.event_type == "product.updated",
                )
            )
            or 0
        )


async def test_a_stock_change_is_one_round_trip_without_begin_or_commit(
    proxied: tuple[Lifecycle, WireCounter],
) -> None:
    process, proxy = proxied
    service = process.app.products
    p = await service.create("admin-1", NewProduct(name="Hot", price=Decimal("1"), stock=1000))
    await service.adjust_stock("admin-1", p.id, 1)  # the connection and its statement ready
    proxy.reset()
    for delta in (1, -1) * 10:
        await service.adjust_stock("admin-1", p.id, delta)
    counts = proxy.reset()
    # One statement per change (the change and its outbox row), committed by itself.
    assert counts.round_trips == 20, counts
    assert counts.executes == 20, counts
    assert counts.queries == [], counts  # no BEGIN / COMMIT / ROLLBACK
    assert counts.parses == 0, counts  # prepared once, reused
    assert await stored_stock(process, p.id) == 1001
    assert await updated_events(process, p.id) == 21


async def test_a_process_without_a_relay_takes_the_transaction_with_its_notify(
    proxied: tuple[Lifecycle, WireCounter],
) -> None:
    """Its commit must wake the relay of another process: the NOTIFY goes in the change's
    transaction, which an autocommitted statement does not have."""
    process, proxy = proxied
    process.app.db.local_relay = False
    service = process.app.products
    p = await service.create("admin-1", NewProduct(name="Hot", price=Decimal("1"), stock=1000))
    await service.adjust_stock("admin-1", p.id, 1)
    proxy.reset()
    await service.adjust_stock("admin-1", p.id, 1)
    counts = proxy.reset()
    # BEGIN, the change with its outbox row, the NOTIFY, COMMIT.
    assert counts.round_trips == 4, counts
    assert counts.executes == 2, counts
    assert [q.split()[0].rstrip(";") for q in counts.queries] == ["BEGIN", "COMMIT"], counts
    assert await stored_stock(process, p.id) == 1002
    assert await updated_events(process, p.id) == 2


async def test_a_refused_one_statement_change_leaves_no_event(
    proxied: tuple[Lifecycle, WireCounter],
) -> None:
    """The one-statement change commits by itself: its outbox row must exist only when the
    row changed (``INSERT … SELECT … FROM`` the updated row), not be rolled back later."""
    process, _ = proxied
    service = process.app.products
    p = await service.create("admin-1", NewProduct(name="Full", price=Decimal("1"), stock=500))
    with pytest.raises(Exception, match="above"):
        await service.adjust_stock("admin-1", p.id, STOCK_MAX)
    assert await stored_stock(process, p.id) == 500
    assert await updated_events(process, p.id) == 0


async def test_a_change_on_a_connection_the_server_ended_is_503_and_the_connection_is_dropped(
    proxied: tuple[Lifecycle, WireCounter], pg_url: str
) -> None:
    """The one-statement change runs on the driver directly: a pooled connection whose server
    session is gone must answer as an outage (503, nothing changed), and must not go back to the
    pool, where it would fail every later change that draws it."""
    process, _ = proxied
    service = process.app.products
    p = await service.create("admin-1", NewProduct(name="Cut", price=Decimal("1"), stock=1000))
    # Several changes at once: the pool holds several connections when the server ends them.
    await asyncio.gather(*(service.adjust_stock("admin-1", p.id, 1) for _ in range(4)))
    assert await end_server_sessions(pg_url) >= 2
    pooled = process.app.db.engine.sync_engine.pool.size() + 10  # every connection it may hold
    refused = 0
    for _ in range(pooled + 1):
        try:
            await service.adjust_stock("admin-1", p.id, 1)
            break
        except ServiceUnavailable:
            refused += 1
    else:
        pytest.fail("every change after the connections ended was refused")
    # One dead connection was drawn and answered as an outage; the others were taken as dead
    # with it (as after a server restart) and opened again, not drawn one refusal each.
    assert refused == 1
    for _ in range(5):
        await service.adjust_stock("admin-1", p.id, 1)
    assert await stored_stock(process, p.id) == 1010
    assert await updated_events(process, p.id) == 10


async def test_the_driver_path_stores_and_answers_what_sqlalchemy_reads_back(
    proxied: tuple[Lifecycle, WireCounter],
) -> None:
    """The one-statement change binds and reads its values on asyncpg directly: the product it
    answers and the outbox row it stores are what SQLAlchemy's own execution reads back."""
    process, _ = proxied
    service = process.app.products
    p = await service.create("admin-1", NewProduct(name="Same", price=Decimal("12.30"), stock=50))
    changed = await service.adjust_stock("admin-1", p.id, -7)
    async with process.app.db.engine.connect() as conn:
        row = (await conn.execute(select(products).where(products.c.id == p.id))).one()
        event = (
            await conn.execute(
                select(outbox).where(
                    outbox.c.aggregate_id == p.id, outbox.c.event_type == "product.updated"
                )
            )
        ).one()
    assert changed.stock == row.stock == 43
    assert (changed.price, changed.name, changed.status.value) == (row.price, row.name, row.status)
    assert (changed.created_at, changed.updated_at) == (row.created_at, row.updated_at)
    assert changed.updated_at.tzinfo is not None
    assert event.kind == "event"
    assert event.published_at is None
    assert event.data["event_type"] == "product.updated"
    assert event.data["data"] == {"productId": p.id}
    assert event.data["id"] == event.id
    assert event.created_at.tzinfo is not None
    assert event.data["timestamp"].startswith(event.created_at.strftime("%Y-%m-%dT%H:%M:%S"))
