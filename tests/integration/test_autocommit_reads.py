"""PostgreSQL's read-only statements on the driver's connection (``AutocommitReads.first_row``):
rows by column name, the pool's own connections, and a caller that gives up mid-statement
leaves the pool usable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import bindparam, func, literal, select, text

from arcana.adapters.database import Database
from tests.conftest import base_settings, wait_for

_ECHO = select(literal(7).label("n"), bindparam("word").label("word")).where(
    bindparam("keep") == literal(True)
)
_WAITS = select(func.pg_advisory_xact_lock(literal(4242)).label("waited"), literal(1).label("n"))


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


async def test_a_caller_that_gives_up_mid_statement_leaves_the_pool_usable(
    db: Database, pg_url: str
) -> None:
    """The caller has its cancellation at once. Its statement, already sent (with any other
    runs of its batch), goes on to its end (bounded by the statement timeout); then the
    connection goes back to the pool, and every connection the pool hands out is usable."""
    reads = db.autocommit_reads
    assert reads is not None
    await reads.first_row(_ECHO, {"word": "warm", "keep": True})
    holder = await asyncpg.connect(pg_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await holder.execute("SELECT pg_advisory_lock(4242)")
        task = asyncio.create_task(reads.first_row(_WAITS, {}))

        async def waiting() -> bool:
            async with db.engine.connect() as conn:
                query = (
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE query LIKE 'SELECT pg_advisory_xact_lock%' AND wait_event_type = 'Lock'"
                )
                return bool((await conn.execute(text(query))).scalar())

        await wait_for(waiting, timeout=10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert _pool(db).checkedout() == 1  # the statement still waits for its lock
    finally:
        await holder.execute("SELECT pg_advisory_unlock(4242)")
        await holder.close()
    await wait_for(lambda: _pool(db).checkedout() == 0, timeout=10)
    rows = await asyncio.gather(
        *(reads.first_row(_ECHO, {"word": str(i), "keep": True}) for i in range(6))
    )
    assert [r["word"] for r in rows if r is not None] == [str(i) for i in range(6)]
