"""Group commit on embedded SQLite: several requests' writes in one transaction, one thread call.

Why: SQLite has one writer at a time, so writers queue on ``Database.writing()``. A unit of
work on aiosqlite makes about nine hops between the event loop and the driver's thread while it
holds that lock (checkout, BEGIN, each statement, COMMIT, reset), and each hop waits until the
event loop comes round to it again, behind every other request's work. Under load the lock is
then held for many turns of the loop per request, and the writes queue behind it.

Here a write is a plain function of a synchronous connection. Callers queue their functions;
one writer task takes everything waiting and runs the whole batch in a single call on its own
thread: ``BEGIN IMMEDIATE``, each function under its own ``SAVEPOINT`` (one that raises is
undone alone, the others stay), one ``COMMIT``; a batch of one write needs no savepoint (if it
raises, the transaction is rolled back). The loop takes the writer lock once per batch,
and the statements of a batch never wait for it. A caller's result is released only after the
batch committed; if the commit fails, every caller of the batch gets the error.

Durability: the connection runs in WAL mode with ``synchronous=NORMAL``, like every connection
of the engine. A commit is in the WAL when it returns, so it survives a crash of the process; a
power loss or an OS crash can lose the last commits before the next checkpoint (SQLite's
documented trade-off for that setting).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Dialect, Engine, create_engine, event
from sqlalchemy.engine import make_url

from arcana import tracing
from arcana.adapters.driver_statements import sqlite_driver, sqlite_execute
from arcana.adapters.loop_threads import LoopThreads

T = TypeVar("T")


@dataclass(slots=True)
class _Write:
    fn: Callable[[Connection], Any]
    future: asyncio.Future[Any]
    ok: bool = False
    value: Any = None
    error: BaseException | None = field(default=None)


class SqliteGroupCommit:
    """One writer of a SQLite file for this process's batched writes (see the module doc)."""

    MAX_BATCH = 256

    def __init__(
        self,
        url: str,
        writing: Callable[[], AbstractAsyncContextManager[None]],
        holds_writer: Callable[[], bool],
        on_connect: Callable[[Any, Any], None],
    ) -> None:
        self._writing = writing
        self._holds_writer = holds_writer
        self._engine: Engine = create_engine(
            make_url(url).set(drivername="sqlite"),
            connect_args={"timeout": 30, "check_same_thread": False},
        )
        event.listen(self._engine, "connect", on_connect)
        # SAVEPOINTs need the transaction in our hands, not in the sqlite3 module's (which
        # would open and commit transactions of its own around statements).
        event.listen(self._engine, "connect", _manual_transactions)
        event.listen(self._engine, "begin", _begin_immediate)
        self._thread = LoopThreads(1, "sqlite-writer")  # started by the first batch
        self._conn: Connection | None = None  # used on the executor's thread only
        self._queue: deque[_Write] = deque()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        """Transactions committed (for tests and the benchmark notes)."""

    @property
    def dialect(self) -> Dialect:
        """The writer connection's dialect, for statements compiled once for its driver."""
        return self._engine.dialect

    async def run(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in the next batch's transaction; its return value once that committed.
        ``fn`` runs on the writer thread and must only use the connection it is given."""
        if self._holds_writer():
            # The batch needs the writer lock this task holds: waiting would never end.
            raise RuntimeError("a group-committed write cannot run inside a writing unit of work")
        loop = asyncio.get_running_loop()
        write = _Write(fn, loop.create_future())
        self._queue.append(write)
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._drain(), name="sqlite-group-commit")
        if not tracing.recording():
            return cast(T, await write.future)
        # The writer thread does not carry the request's trace: one span for the wait.
        with tracing.span("sql group commit", {"db.system": "sqlite"}, kind="client"):
            return cast(T, await write.future)

    async def _drain(self) -> None:
        while self._queue:
            batch: list[_Write] = []
            while self._queue and len(batch) < self.MAX_BATCH:
                write = self._queue.popleft()
                if not write.future.done():  # a caller that gave up is not written
                    batch.append(write)
            if not batch:
                continue
            try:
                async with self._writing():
                    await self._thread.run(self._run_batch, batch)
            except BaseException as exc:  # BEGIN or COMMIT failed: nothing of the batch stays
                for write in batch:
                    if not write.future.done():
                        write.future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            self.batches += 1
            for write in batch:
                if write.future.done():
                    continue
                if write.ok:
                    write.future.set_result(write.value)
                else:
                    write.future.set_exception(cast(BaseException, write.error))

    def _run_batch(self, batch: list[_Write]) -> None:
        if self._conn is None:
            self._conn = self._engine.connect()
        conn = self._conn
        try:
            if len(batch) == 1:
                self._run_alone(conn, batch[0])
                return
            # The savepoints are SQL of our own on the driver's connection: SQLAlchemy's
            # ``begin_nested`` compiles a new SAVEPOINT and RELEASE statement each time, which
            # cost about as much as a login's two inserts on this thread.
            driver = sqlite_driver(conn)
            with conn.begin():
                for write in batch:
                    sqlite_execute(driver, "SAVEPOINT arcana_write")
                    try:
                        write.value = write.fn(conn)
                    except Exception as exc:
                        sqlite_execute(driver, "ROLLBACK TO arcana_write")
                        sqlite_execute(driver, "RELEASE arcana_write")
                        write.error = exc
                    else:
                        sqlite_execute(driver, "RELEASE arcana_write")
                        write.ok = True
        except BaseException:
            self._conn = None
            conn.invalidate()
            raise

    @staticmethod
    def _run_alone(conn: Connection, write: _Write) -> None:
        """A batch of one write (what a lightly loaded writer mostly sees) needs no savepoint:
        if it raises, rolling back the transaction undoes it alone."""
        transaction = conn.begin()
        try:
            value = write.fn(conn)
        except Exception as exc:
            transaction.rollback()
            write.error = exc
            return
        except BaseException:
            transaction.rollback()
            raise
        transaction.commit()
        write.value = value
        write.ok = True

    async def close(self) -> None:
        """Finish what is queued, then close the connection and the thread."""
        task, self._task = self._task, None
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        thread, self._thread = self._thread, LoopThreads(1, "sqlite-writer")
        if self._conn is not None:  # the queue is drained: no batch runs now
            await thread.run(self._close_connection)
        thread.shutdown(wait=True)
        self._engine.dispose()

    def _close_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _manual_transactions(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None


def _begin_immediate(conn: Connection) -> None:
    # Take SQLite's write lock at BEGIN: a deferred transaction that reads first could not be
    # upgraded if another connection wrote in between (SQLITE_BUSY without waiting). Sent on
    # the driver's connection: through ``exec_driver_sql`` it went through SQLAlchemy's whole
    # execution (events, a cursor result) once per batch.
    sqlite_execute(sqlite_driver(conn), "BEGIN IMMEDIATE")
