"""Reading and settling outbox rows for the relay.

PostgreSQL: one transaction per batch holds a transaction-scoped advisory lock (one relay
drains at a time across every process, so rows leave in ``seq`` order) and locks its rows
with ``FOR UPDATE SKIP LOCKED``; the rows are marked published in that same transaction,
after they were delivered. SQLite has a single writer: relays of one process share a lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Executable, delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from arcana.adapters.database import Database
from arcana.adapters.group_commit import SqliteGroupCommit
from arcana.adapters.tables import outbox
from arcana.domain.timestamps import utcnow

# pg_advisory_xact_lock key: "arcana outbox relay".
RELAY_LOCK_KEY = 0x4152_4341_4E41_01

_sqlite_locks: dict[str, asyncio.Lock] = {}


@dataclass(frozen=True, slots=True)
class OutboxRow:
    seq: int
    id: str
    kind: str
    event_type: str
    aggregate_id: str | None
    data: dict[str, Any]
    created_at: datetime
    attempts: int
    trace_context: str | None = None
    """W3C traceparent of the transaction that wrote the row (tracing on only)."""


class Batch:
    """Rows claimed by one relay; ``settle`` records what happened to them."""

    def __init__(
        self,
        conn: AsyncConnection | None,
        rows: list[OutboxRow],
        group_commit: SqliteGroupCommit | None = None,
    ) -> None:
        self._conn = conn
        self._group_commit = group_commit
        self.rows = rows

    async def settle(self, published: Sequence[int], failed: int | None = None) -> None:
        statements: list[Executable] = []
        if published:
            statements.append(
                update(outbox)
                .where(outbox.c.seq.in_(list(published)))
                .values(published_at=utcnow(), attempts=outbox.c.attempts + 1)
            )
        if failed is not None:
            statements.append(
                update(outbox).where(outbox.c.seq == failed).values(attempts=outbox.c.attempts + 1)
            )
        if self._group_commit is not None and statements:
            # SQLite: with the other writes of this process, not beside them in the busy handler.
            def write(conn: Connection) -> None:
                for statement in statements:
                    conn.execute(statement)

            await self._group_commit.run(write)
            return
        assert self._conn is not None, "a batch settles through its connection or the writer"
        for statement in statements:
            await self._conn.execute(statement)


class SqlOutbox:
    def __init__(self, db: Database) -> None:
        self._db = db

    @asynccontextmanager
    async def claim(self, limit: int, *, with_jobs: bool) -> AsyncIterator[Batch | None]:
        """Yield the oldest unpublished rows (``None`` when another relay holds the outbox).
        What ``settle`` wrote commits when the block exits normally."""
        query = (
            select(outbox)
            .where(outbox.c.published_at.is_(None))
            .order_by(outbox.c.seq)
            .limit(limit)
        )
        if not with_jobs:
            query = query.where(outbox.c.kind == "event")
        if self._db.is_sqlite:
            lock = _sqlite_locks.setdefault(self._db.url, asyncio.Lock())
            reads, writer = self._db.sqlite_reads, self._db.group_commit
            if reads is not None and writer is not None:
                # A SQLite file: read on a reader thread, settle through the group commit.
                async with lock:
                    rows = [_row(r) for r in (await reads.execute(query)).mappings()]
                    yield Batch(None, rows, writer)
                return
            async with lock, self._db.engine.connect() as conn:
                rows = [_row(r) for r in (await conn.execute(query)).mappings()]
                await conn.commit()  # no read transaction held while delivering
                batch = Batch(conn, rows)
                yield batch
                await conn.commit()
            return
        async with self._db.engine.connect() as conn, conn.begin():
            got = await conn.scalar(select(func.pg_try_advisory_xact_lock(RELAY_LOCK_KEY)))
            if not got:
                yield None
                return
            # Marking rows published needs no fsync: a mark lost in a crash only means the
            # rows are delivered again, which at-least-once allows.
            await conn.execute(text("SET LOCAL synchronous_commit = off"))
            result = await conn.execute(query.with_for_update(skip_locked=True))
            yield Batch(conn, [_row(r) for r in result.mappings()])

    async def purge_published(self, before: datetime, batch_size: int = 1000) -> int:
        """Delete rows published before ``before``, one batch per transaction: once relayed
        they are only history, and some carry sealed secrets that need not rest forever."""
        total = 0
        while True:
            async with self._db.engine.begin() as conn:
                ids = select(outbox.c.seq).where(outbox.c.published_at < before).limit(batch_size)
                result = await conn.execute(delete(outbox).where(outbox.c.seq.in_(ids)))
                n = int(getattr(result, "rowcount", 0) or 0)
            total += n
            if n < batch_size:
                return total

    async def pending(self) -> int:
        async with self._db.engine.connect() as conn:
            count = await conn.scalar(
                select(func.count()).select_from(outbox).where(outbox.c.published_at.is_(None))
            )
        return int(count or 0)


async def backlog(db: Database) -> tuple[int, datetime | None]:
    """Undelivered rows and when the oldest was written (one query on the partial index)."""
    async with db.engine.connect() as conn:
        row = (
            await conn.execute(
                select(func.count(), func.min(outbox.c.created_at)).where(
                    outbox.c.published_at.is_(None)
                )
            )
        ).one()
    return int(row[0] or 0), row[1]


def _row(m: Any) -> OutboxRow:
    return OutboxRow(
        seq=int(m["seq"]),
        id=str(m["id"]),
        kind=str(m["kind"]),
        event_type=str(m["event_type"]),
        aggregate_id=m["aggregate_id"],
        data=dict(m["data"]),
        created_at=m["created_at"],
        attempts=int(m["attempts"]),
        trace_context=m.get("trace_context"),
    )
