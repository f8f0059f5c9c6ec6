"""Round trips per stock change on PostgreSQL, counted on the wire (``tests/pg_wire.py``): a
count, not a time, so it holds on a loaded machine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

from arcana.adapters.tables import outbox, products
from arcana.domain.products import STOCK_MAX, NewProduct
from arcana.lifecycle import Lifecycle
from tests.conftest import base_settings, truncate_all
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
