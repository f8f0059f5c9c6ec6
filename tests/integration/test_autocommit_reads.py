"""PostgreSQL's read-only statements on the driver's connection (``AutocommitReads.first_row``):
rows by column name, the pool's own connections, and a statement interrupted mid-way leaves
the pool usable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import bindparam, func, literal, select, text

from arcana.adapters.database import Database
from tests.conftest import base_settings, wait_for

_ECHO = select(literal(7).label("n"), bindparam("word").label("word")).where(
    bindparam("keep") == literal(True)
)
_SLEEP = select(func.pg_sleep(30).label("slept"), literal(1).label("n"))


@pytest.fixture
async def db(pg_url: str) -> AsyncIterator[Database]:
    database = Database(base_settings(database_url=pg_url, db_pool_size=2, db_max_overflow=0))
    try:
        yield database
    finally:
        await database.dispose()


def _pool(db: Database) -> Any:
    return db.engine.sync_engine.pool


async def test_first_row_by_column_name_or_none(db: Database) -> None:
    reads = db.autocommit_reads
    assert reads is not None
    row = await reads.first_row(_ECHO, {"word": "hi", "keep": True})
    assert row is not None
    assert (row["n"], row["word"]) == (7, "hi")
    assert await reads.first_row(_ECHO, {"word": "hi", "keep": False}) is None
    assert _pool(db).checkedout() == 0


async def test_an_interrupted_statement_leaves_the_pool_usable(
    db: Database,
) -> None:
    reads = db.autocommit_reads
    assert reads is not None
    await reads.first_row(_ECHO, {"word": "warm", "keep": True})
    task = asyncio.create_task(reads.first_row(_SLEEP, {}))

    async def sleeping() -> bool:
        async with db.engine.connect() as conn:
            query = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'"
            return bool((await conn.execute(text(query))).scalar())

    await wait_for(sleeping, timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _pool(db).checkedout() == 0
    # Every connection the pool hands out next is usable (none comes back with the
    # interrupted statement still running on it).
    rows = await asyncio.gather(
        *(reads.first_row(_ECHO, {"word": str(i), "keep": True}) for i in range(6))
    )
    assert [r["word"] for r in rows if r is not None] == [str(i) for i in range(6)]
