"""The PostgreSQL pool serves tasks waiting for a connection first come, first served
(``adapters/fair_pool.py``), and loses no connection to a waiter that gives up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import TimeoutError as PoolTimeout

from arcana.adapters.database import Database
from tests.conftest import base_settings, wait_for


@pytest.fixture
async def one_connection(pg_url: str) -> AsyncIterator[Database]:
    db = Database(base_settings(database_url=pg_url, db_pool_size=1, db_max_overflow=0))
    try:
        yield db
    finally:
        await db.dispose()


def _waiting(db: Database) -> int:
    pool: Any = db.engine.sync_engine.pool
    return int(pool._pool.waiting)


async def test_waiters_get_the_connection_in_arrival_order(one_connection: Database) -> None:
    db = one_connection
    order: list[str] = []

    async def use(name: str) -> None:
        async with db.engine.connect() as conn:
            order.append(name)
            await conn.execute(text("SELECT 1"))

    holder = await db.engine.connect()
    await holder.execute(text("SELECT 1"))
    tasks = []
    for i, name in enumerate("abc", start=1):
        tasks.append(asyncio.create_task(use(name)))
        await wait_for(lambda i=i: _waiting(db) == i)
    # The holder gives the connection back and asks again at once, before any woken waiter
    # has run: with a plain asyncio queue it would take the connection straight back (and
    # could do so again and again, starving the waiters until their pool timeout).
    await holder.close()
    await use("holder again")
    await asyncio.gather(*tasks)
    assert order == ["a", "b", "c", "holder again"]


async def test_a_waiter_that_gives_up_loses_no_connection(pg_url: str) -> None:
    db = Database(
        base_settings(database_url=pg_url, db_pool_size=1, db_max_overflow=0, db_pool_timeout=0.1)
    )
    try:
        holder = await db.engine.connect()
        await holder.execute(text("SELECT 1"))
        with pytest.raises(PoolTimeout):
            await db.engine.connect()
        assert _waiting(db) == 0
        await holder.close()
        pool: Any = db.engine.sync_engine.pool
        assert pool.checkedin() == 1
        async with db.engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await db.dispose()
