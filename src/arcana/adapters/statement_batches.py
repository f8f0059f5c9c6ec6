"""Statements that arrive together go together: several requests' runs of one statement on
PostgreSQL in one round trip (group commit for a write, one exchange for reads).

Why: under load each request ran its statement alone on a pooled connection, in autocommit: a
round trip, an execution and (for a write) a commit per request, 64 connections' commits taking
turns at the write-ahead log. Batched, a stock change on ``arcana serve`` under 64 connections
cost 250-370 µs of server CPU and 90-110 µs of PostgreSQL CPU instead of 500-580 and 300-320,
and a ``GET /auth/me`` 110-150 µs of server CPU instead of 210-280 (``bench/RESULTS.md``,
eighth pass).

How: a run is queued with its parameters; one drain task at a time takes everything waiting (up
to ``MAX_BATCH``) and runs it with asyncpg's ``fetchmany``: every run's statement is bound and
executed in one pipeline closed by one ``Sync``, which PostgreSQL runs as one implicit
transaction (atomic since asyncpg 0.22: all or nothing; for reads, each statement still takes
its own snapshot under READ COMMITTED) and, for a write, commits once. While a batch runs the
next one gathers. A batch of one is the plain statement (``fetchrow``): a lightly loaded server
sends exactly what it sent before.

The batched form of the statement returns ``batch_key``, a parameter it is given (the run's
place in its batch), beside each row, so every caller gets its own first row, or ``None``,
even when one batch runs the same parameters several times (one product changed twice).

Deadlocks (writes): a batch holds the locks of the rows it changed until it commits. Given
``order``, the parameter naming the row a run locks, a batch runs in that order (stably: one
row's runs keep their order of arrival), so every batch, of this process or another, takes its
row locks in the same order and no two can wait on each other in a cycle; a lone statement
holds one row.

Failure: PostgreSQL's error in one statement undoes the whole batch (nothing of it stays); then
each run is made again alone, so the failing one alone gets its error. A connection lost
mid-batch fails every run of the batch with the outage, as it would have failed each alone.
Not behind a transaction pooler (PgBouncer): a statement's prepare and its execution could
reach two different server connections.

A caller that gives up (cancelled) has its cancellation at once. Its run is dropped if it was
not sent yet; once sent, it goes on with its batch (the others of the batch want their rows)
until it ends, within the statement timeout, and the connection then goes back to the pool.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import Integer, bindparam, cast
from sqlalchemy.ext.asyncio import AsyncEngine

from arcana.adapters.driver_statements import DriverStatement, fetch_row, pooled_driver

BATCH_KEY = "batch_key"
BATCH_KEY_COLUMN = cast(bindparam(BATCH_KEY, type_=Integer), Integer).label(BATCH_KEY)
"""The column a statement's batched form adds: ``select(…, BATCH_KEY_COLUMN)``."""

Row = Mapping[str, Any]


@dataclass(slots=True)
class _Run:
    params: Mapping[str, Any]
    future: asyncio.Future[Row | None]


class StatementBatches:
    """The batches of one statement in one process (see the module doc). ``alone``: the
    statement; ``batched``: the same with ``BATCH_KEY_COLUMN`` among its columns; ``order``:
    for a write, the parameter that names the row it locks."""

    MAX_BATCH = 256
    MAX_IN_FLIGHT = 4
    STALLED = 0.05
    """One batch at a time, as long as batches come back: a run finds the batch in flight and
    waits for the next. When no batch has been sent or come back for ``STALLED`` seconds (one
    waits for a row lock another transaction holds, say), a run starts another drain, up to
    ``MAX_IN_FLIGHT``, so that one slow batch does not hold up every later run. (Several
    batches at once all the time measured slower: smaller batches, more round trips.)"""

    def __init__(
        self,
        engine: AsyncEngine,
        alone: DriverStatement,
        batched: DriverStatement,
        order: str | None = None,
    ) -> None:
        self._engine = engine
        self._alone = alone
        self._batched = batched
        self._order = order
        self._queue: deque[_Run] = deque()
        self._drains: set[asyncio.Task[None]] = set()
        self._progress = 0.0
        """The loop's time when a batch was last sent or came back."""
        self._watch: asyncio.TimerHandle | None = None
        """The pending look at whether batches stall (``_watch_stall``), if any."""
        self.round_trips = 0
        """Exchanges with PostgreSQL, a batch or a lone run each (for tests and benchmarks)."""
        self.rerun = 0
        """Batches undone by an error and run again one by one."""

    async def first_row(self, params: Mapping[str, Any]) -> Row | None:
        """The statement's first row for ``params`` (``None``: no row), once the batch that
        carried it ended (for a write: committed)."""
        loop = asyncio.get_running_loop()
        run = _Run(params, loop.create_future())
        self._queue.append(run)
        if not self._drains:
            self._start_drain(loop)
        elif self._watch is None:
            self._watch = loop.call_later(self.STALLED, self._watch_stall)
        return await run.future

    def _start_drain(self, loop: asyncio.AbstractEventLoop) -> None:
        drain = loop.create_task(self._drain(), name="statement-batches")
        self._drains.add(drain)
        drain.add_done_callback(self._drains.discard)

    def _watch_stall(self) -> None:
        """While runs wait: another drain once no batch was sent or came back for
        ``STALLED`` seconds (see there), else a look again later."""
        self._watch = None
        if not self._queue:
            return
        loop = asyncio.get_running_loop()
        if not self._drains or (
            len(self._drains) < self.MAX_IN_FLIGHT and loop.time() - self._progress >= self.STALLED
        ):
            self._start_drain(loop)
        else:
            self._watch = loop.call_later(self.STALLED, self._watch_stall)

    async def _drain(self) -> None:
        try:
            await self._drain_queue()
        finally:
            # At once, not in a done callback: a run queued right after the queue was found
            # empty must see this drain gone, and start one of its own.
            task = asyncio.current_task()
            if task is not None:
                self._drains.discard(task)

    async def _drain_queue(self) -> None:
        while self._queue:
            batch: list[_Run] = []
            while self._queue and len(batch) < self.MAX_BATCH:
                run = self._queue.popleft()
                if not run.future.done():  # a caller that gave up is not run
                    batch.append(run)
            if not batch:
                continue
            loop = asyncio.get_running_loop()
            self._progress = loop.time()
            try:
                if len(batch) == 1:
                    rows = [await self._run_alone(batch[0])]
                else:
                    rows = await self._together(batch)
            except BaseException as exc:
                for run in batch:
                    if not run.future.done():
                        run.future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            finally:
                self._progress = loop.time()
            for run, row in zip(batch, rows, strict=True):
                if not run.future.done():
                    run.future.set_result(row)

    async def _run_alone(self, run: _Run) -> Row | None:
        self.round_trips += 1
        return await fetch_row(self._engine, self._alone, run.params)

    async def _together(self, batch: list[_Run]) -> list[Row | None]:
        """Each run's first row (or ``None``), in the order of ``batch`` once this returns."""
        if self._order is not None:
            order = self._order
            batch.sort(key=lambda run: run.params[order])  # stable: see "Deadlocks" above
        statement = self._batched
        self.round_trips += 1
        try:
            async with pooled_driver(self._engine) as driver:
                records = await driver.fetchmany(
                    statement.sql,
                    [statement.args({**run.params, BATCH_KEY: i}) for i, run in enumerate(batch)],
                )
        except asyncpg.PostgresError:
            # One statement's error undid the batch: each run alone, so that only the
            # failing one answers with it.
            self.rerun += 1
            return await self._one_by_one(batch)
        rows: list[Row | None] = [None] * len(batch)
        for record in records:
            row = dict(statement.row(record))
            i = row.pop(BATCH_KEY)
            if rows[i] is None:  # its first row
                rows[i] = row
        return rows

    async def _one_by_one(self, batch: list[_Run]) -> list[Row | None]:
        rows: list[Row | None] = []
        for run in batch:
            try:
                rows.append(await self._run_alone(run))
            except Exception as exc:
                rows.append(None)
                if not run.future.done():
                    run.future.set_exception(exc)
        return rows
