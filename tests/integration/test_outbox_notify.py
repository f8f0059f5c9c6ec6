"""Who sends ``NOTIFY arcana_outbox`` on PostgreSQL: a process without a relay of its own, from
the transaction that writes outbox rows (so a relay of another process wakes at its commit);
never a process whose relay runs (its commits wake that relay in-process). Migration 0008
dropped the trigger that notified on every outbox insert, and its downgrade restores it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
from alembic import command
from sqlalchemy.engine import Connection

from arcana.adapters.database import Database
from arcana.adapters.migrator import alembic_config, migrate
from arcana.bootstrap import App
from arcana.domain.products import NewProduct
from arcana.lifecycle import Lifecycle
from tests.conftest import PG_ADMIN_DSN, base_settings, wait_for
from tests.events_support import commit_events, product_event

postgres = pytest.mark.parametrize("backend", ["postgres"], indirect=True)

SENTINEL = "sentinel"


class Listener:
    """A session LISTENing on the relays' channel, as the relay of another process does."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.payloads: list[str] = []
        self._sentinel = asyncio.Event()

    def _received(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self.payloads.append(payload)
        if payload == SENTINEL:
            self._sentinel.set()

    async def received_before_sentinel(self) -> list[str]:
        """The notifications that arrived before a sentinel sent now. Notifications arrive
        in commit order, so a NOTIFY of anything committed before this call is among them."""
        await self.conn.execute(f"NOTIFY arcana_outbox, '{SENTINEL}'")
        await asyncio.wait_for(self._sentinel.wait(), 10)
        return self.payloads[: self.payloads.index(SENTINEL)]


@asynccontextmanager
async def listening(container: App) -> AsyncIterator[Listener]:
    dsn = container.db.url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    listener = Listener(conn)
    await conn.add_listener("arcana_outbox", listener._received)
    try:
        yield listener
    finally:
        await conn.close()


Write = Callable[[], Awaitable[object]]


async def event_commit(container: App) -> Write:
    return lambda: commit_events(container, product_event())


async def stock_change(container: App) -> Write:
    p = await container.products.create(
        "admin-1", NewProduct(name="Hot", price=Decimal("1"), stock=1000)
    )
    return lambda: container.products.adjust_stock("admin-1", p.id, 1)


writes = pytest.mark.parametrize("prepare", [event_commit, stock_change], ids=["uow", "stock"])


@postgres
@writes
async def test_a_write_of_a_process_without_a_relay_notifies(
    container: App, prepare: Callable[[App], Awaitable[Write]]
) -> None:
    write = await prepare(container)
    assert container.db.notifies_outbox
    async with listening(container) as listener:
        await write()
        assert await listener.received_before_sentinel() == [""]


@postgres
@writes
async def test_a_write_of_a_process_whose_relay_runs_does_not_notify(
    process: Lifecycle, prepare: Callable[[App], Awaitable[Write]]
) -> None:
    container = process.app
    write = await prepare(container)
    process.start_relay()
    assert not container.db.notifies_outbox
    async with listening(container) as listener:
        await write()
        assert await listener.received_before_sentinel() == []
    # Woken in-process: delivered without a NOTIFY (the fallback poll is 2 s away at least).
    await wait_for(lambda: _none_pending(container), timeout=10)


async def _none_pending(container: App) -> bool:
    return await container.events.relay.pending() == 0


# -- migration 0008 ------------------------------------------------------------------------------
async def _triggers(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'outbox'::regclass AND NOT tgisinternal"
        )
        return [r["tgname"] for r in rows]
    finally:
        await conn.close()


async def _downgrade(db: Database, revision: str) -> None:
    def run(connection: Connection) -> None:
        cfg = alembic_config(db.url)
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, revision)

    async with db.engine.begin() as conn:
        await conn.run_sync(run)


@pytest.mark.parametrize("engine", ["postgres", "sqlite"])
async def test_migration_0008_drops_the_notify_trigger_and_its_downgrade_restores_it(
    engine: str, tmp_path: Path
) -> None:
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    name = f"arcana_test_0008_{uuid.uuid4().hex[:8]}"
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    if engine == "postgres":
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = f"{base.replace('postgresql://', 'postgresql+asyncpg://')}/{name}"
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'arcana.db'}"
    db = Database(base_settings(database_url=url, var_dir=tmp_path / "var"))
    try:
        await migrate(db)
        await _downgrade(db, "0007")
        if engine == "postgres":
            assert await _triggers(f"{base}/{name}") == ["outbox_notify"]
        await migrate(db)
        if engine == "postgres":
            assert await _triggers(f"{base}/{name}") == []
    finally:
        await db.dispose()
        if engine == "postgres":
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
