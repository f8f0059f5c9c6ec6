"""Group commit on embedded SQLite: concurrent stock changes share transactions, a failing write
is undone alone, a failed commit fails every write of its batch, and each stored change has its
outbox rows (at-least-once) while a refused one has none."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Connection, func, select, text

from arcana.adapters.group_commit import SqliteGroupCommit
from arcana.adapters.tables import outbox, products
from arcana.bootstrap import App
from arcana.config import Settings
from tests.conftest import backend_settings
from tests.products_support import BASE, concurrent_stock_changes, create_product

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.usefixtures("seeded_principals"),
]


@pytest.fixture
def settings(tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """Embedded only: the conftest's process, container and client follow this."""
    return backend_settings("embedded", tmp_path, request)


def writer(container: App) -> SqliteGroupCommit:
    assert container.db.group_commit is not None
    return container.db.group_commit


async def count_outbox(container: App, product_id: str) -> dict[str, int]:
    async with container.db.engine.connect() as conn:
        rows = await conn.execute(
            select(outbox.c.event_type, func.count())
            .where(outbox.c.aggregate_id == product_id)
            .group_by(outbox.c.event_type)
        )
        return {str(t): int(n) for t, n in rows}


async def test_concurrent_changes_share_transactions_and_keep_their_events(
    client: httpx.AsyncClient, container: App
) -> None:
    p = await create_product(client, container, stock=30)
    before = writer(container).batches
    codes = await concurrent_stock_changes(client, container, p["id"], -1, 40)
    assert codes.count(200) == 30
    assert codes.count(422) == 10
    assert (await client.get(f"{BASE}/{p['id']}")).json()["stock"] == 0
    # Fewer transactions than changes: requests waiting together were committed together.
    assert writer(container).batches - before < 40
    # One product.updated per stored change and none for a refused one; the level events of
    # the changes that left 1..10 and 0 in stock (contract §8).
    events = await count_outbox(container, p["id"])
    assert events["product.updated"] == 30
    assert events["product.low_stock"] == 10
    assert events["product.out_of_stock"] == 1


def insert_product(name: str) -> Callable[[Connection], str]:
    """A write that inserts product ``name`` and returns the name."""

    def write(conn: Connection) -> str:
        conn.execute(
            text(
                "INSERT INTO products (id, name, description, price, stock, category, status,"
                " created_at, updated_at) VALUES (:id, :id, '', 1, 1, 'c', 'Draft',"
                " '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            ),
            {"id": name},
        )
        return name

    return write


async def stored_stock(container: App) -> dict[str, int]:
    async with container.db.engine.connect() as conn:
        rows = await conn.execute(select(products.c.id, products.c.stock))
        return {str(product_id): int(stock) for product_id, stock in rows}


async def test_a_failing_write_is_undone_alone(container: App) -> None:
    gc = writer(container)

    def bad(conn: Connection) -> None:
        conn.execute(text("UPDATE products SET stock = 5 WHERE id = 'p-1'"))
        raise ValueError("refused after writing")

    results = await asyncio.gather(
        gc.run(insert_product("p-1")),
        gc.run(bad),
        gc.run(insert_product("p-2")),
        return_exceptions=True,
    )
    assert results[0] == "p-1"
    assert isinstance(results[1], ValueError)
    assert results[2] == "p-2"
    # The failed write's UPDATE is gone, the rest stays.
    assert await stored_stock(container) == {"p-1": 1, "p-2": 1}


async def test_a_lone_failing_write_is_undone(container: App) -> None:
    """A batch of one write runs without a savepoint: its transaction is rolled back."""
    gc = writer(container)

    def bad(conn: Connection) -> None:
        insert_product("p-1")(conn)
        raise ValueError("refused after writing")

    before = gc.batches
    with pytest.raises(ValueError, match="refused after writing"):
        await gc.run(bad)
    assert gc.batches == before + 1  # alone in its batch
    assert await stored_stock(container) == {}
    assert await gc.run(insert_product("p-2")) == "p-2"  # the writer goes on
    assert await stored_stock(container) == {"p-2": 1}


async def test_a_failed_commit_fails_every_write_of_the_batch(container: App) -> None:
    gc = writer(container)

    def session_of_nobody(conn: Connection) -> None:
        # Checked only at COMMIT: the whole batch's transaction is refused.
        conn.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
        conn.execute(
            text(
                "INSERT INTO auth_sessions (id, user_id, created_at, last_used_at, expires_at)"
                " VALUES ('s-1', 'nobody', '2026-01-01', '2026-01-01', '2026-01-01')"
            )
        )

    def innocent(conn: Connection) -> str:
        conn.execute(text("UPDATE users SET name = 'renamed' WHERE id = 'user-1'"))
        return "ok"

    results = await asyncio.gather(
        gc.run(innocent), gc.run(session_of_nobody), return_exceptions=True
    )
    assert all(isinstance(r, Exception) for r in results), results
    async with container.db.engine.connect() as conn:
        name = await conn.scalar(text("SELECT name FROM users WHERE id = 'user-1'"))
    assert name == "user-1"
    # The writer recovers: the next batch commits.
    assert await gc.run(innocent) == "ok"


async def test_a_write_inside_a_writing_unit_of_work_is_refused(container: App) -> None:
    async with container.db.writing():
        with pytest.raises(RuntimeError):
            await writer(container).run(lambda conn: None)
