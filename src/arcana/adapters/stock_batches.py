"""Group commit of PostgreSQL's one-statement stock changes: the changes that arrive together
are sent together, in one round trip, and committed together.

Why: under load each change was a statement of its own on a pooled connection, in autocommit:
one round trip, one execution and one commit per change, 64 connections' commits taking turns
at the write-ahead log. On the same 1,000 products, asyncpg alone (no HTTP) made 3,100 changes a
second at 200 µs of client CPU and 300 µs of PostgreSQL CPU per change one by one, and 12,900 a
second at 31 µs and 46 µs in batches (``bench/RESULTS.md``).

How: a change is queued with its parameters; one drain task at a time takes everything waiting
(up to ``MAX_BATCH``) and runs it with asyncpg's ``fetchmany``: every change's statement is
bound and executed in one pipeline closed by one ``Sync``, which PostgreSQL runs as one implicit
transaction (asyncpg ≥ 0.22 makes it atomic: all or nothing) and commits once. While a batch
runs, the next one gathers. A batch of one is the plain statement (``fetchrow``): a lightly
loaded server sends exactly what it sent before.

Each statement returns the changed row, or none when its ``WHERE`` refused the change, with the
change's own key beside it (its outbox row id, unique per change), so every caller gets its own
answer even when one batch changes the same product several times.

Deadlocks: a batch holds the locks of the rows it changed until it commits. Its changes are
ordered by product (stably: one product's changes keep their order of arrival), so every batch,
of this process or another, takes its row locks in the same order and no two can wait on each
other in a cycle; a lone statement holds one row.

Failure: PostgreSQL's error in one statement undoes the whole batch (nothing of it stays); then
each change is run again alone, so the failing change alone gets its error. A connection lost
mid-batch fails every change of the batch with the outage, as it would have failed each alone.
Not behind a transaction pooler (PgBouncer): there, every change takes its own transaction.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from arcana.adapters.driver_statements import DriverStatement, fetch_row, pooled_driver


@dataclass(slots=True)
class _Change:
    params: Mapping[str, Any]
    order: str
    key: str
    future: asyncio.Future[Mapping[str, Any] | None]


class StockBatches:
    """The batches of one process (see the module doc). ``statement``: the one-statement change,
    returning the changed row and a ``change`` column that echoes the parameter named ``key``;
    ``order``: the parameter that names the row it locks."""

    MAX_BATCH = 256

    def __init__(self, engine: AsyncEngine, statement: DriverStatement, key: str, order: str):
        self._engine = engine
        self._statement = statement
        self._key = key
        self._order = order
        self._queue: deque[_Change] = deque()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        """Batches sent (for tests and the benchmark notes)."""
        self.rerun = 0
        """Batches undone by an error and run again change by change."""

    async def run(self, params: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """The changed row (``None``: the statement's ``WHERE`` refused the change), once the
        batch that carried it committed."""
        loop = asyncio.get_running_loop()
        change = _Change(params, params[self._order], params[self._key], loop.create_future())
        self._queue.append(change)
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._drain(), name="stock-batches")
        return await change.future

    async def _drain(self) -> None:
        while self._queue:
            batch: list[_Change] = []
            while self._queue and len(batch) < self.MAX_BATCH:
                change = self._queue.popleft()
                if not change.future.done():  # a caller that gave up is not written
                    batch.append(change)
            if not batch:
                continue
            try:
                if len(batch) == 1:
                    rows = {batch[0].key: await self._alone(batch[0])}
                else:
                    rows = await self._together(batch)
            except BaseException as exc:
                for change in batch:
                    if not change.future.done():
                        change.future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            self.batches += 1
            for change in batch:
                if not change.future.done():
                    change.future.set_result(rows.get(change.key))

    async def _alone(self, change: _Change) -> Mapping[str, Any] | None:
        return await fetch_row(self._engine, self._statement, change.params)

    async def _together(self, batch: list[_Change]) -> dict[str, Mapping[str, Any] | None]:
        batch.sort(key=lambda change: change.order)  # stable: see "Deadlocks" above
        statement = self._statement
        try:
            async with pooled_driver(self._engine) as driver:
                records = await driver.fetchmany(
                    statement.sql, [statement.args(change.params) for change in batch]
                )
        except asyncpg.PostgresError:
            # One statement's error undid the batch: each change alone, so that only the
            # failing one answers with it.
            self.rerun += 1
            return await self._one_by_one(batch)
        found: dict[str, Mapping[str, Any] | None] = {}
        for record in records:
            row = statement.row(record)
            found[row["change"]] = row
        return found

    async def _one_by_one(self, batch: list[_Change]) -> dict[str, Mapping[str, Any] | None]:
        rows: dict[str, Mapping[str, Any] | None] = {}
        for change in batch:
            try:
                rows[change.key] = await self._alone(change)
            except Exception as exc:
                if not change.future.done():
                    change.future.set_exception(exc)
        return rows
