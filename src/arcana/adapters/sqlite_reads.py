"""Reads of a SQLite file in one thread hop per statement.

Through aiosqlite every statement of a read costs about six hops between the event loop and
the driver's thread (cursor, execute, fetch, close, the reset of the pooled connection, ...),
and each hop waits for the loop to come round again. Here a read statement runs whole on a
small pool of reader threads, each with a connection of its own, and comes back as a buffered
result: one hop. The connections are in autocommit (no BEGIN): each statement reads the latest
commit (WAL lets readers run beside the writer), as a ``SELECT`` outside a transaction did on
the aiosqlite connections.

``first_row`` serves the hottest reads (a login's user look-up, the bearer's user on every
``GET /auth/me``) on the driver's connection, with the statement compiled once
(``adapters/driver_statements.py``), as ``AutocommitReads.first_row`` does on PostgreSQL.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Connection, Engine, Executable, Result, create_engine, event
from sqlalchemy.engine import make_url

from arcana import tracing
from arcana.adapters.driver_statements import (
    DriverStatement,
    FirstRowReads,
    sqlite_driver,
    sqlite_execute,
)
from arcana.adapters.loop_threads import LoopThreads


class SqliteReads(FirstRowReads):
    """Offers what repositories call on a session in a read-only unit of work, ``execute``, and
    ``first_row`` for the reads that use it (see the module doc)."""

    THREADS = 2

    def __init__(self, url: str, on_connect: Callable[[Any, Any], None]) -> None:
        self._engine: Engine = create_engine(
            make_url(url).set(drivername="sqlite"),
            connect_args={"timeout": 30, "check_same_thread": False},
            isolation_level="AUTOCOMMIT",
            pool_size=self.THREADS,
        )
        event.listen(self._engine, "connect", on_connect)
        super().__init__(self._engine.dialect)
        self._threads = LoopThreads(self.THREADS, "sqlite-reader")
        self._local = threading.local()
        self._connections: list[Connection] = []

    async def _fetch_first(
        self, compiled: DriverStatement, params: Mapping[str, Any]
    ) -> Mapping[str, Any] | None:
        return await self._threads.run(self._first_row, compiled, compiled.args(params))

    def _first_row(self, compiled: DriverStatement, args: list[Any]) -> Mapping[str, Any] | None:
        cursor = sqlite_execute(sqlite_driver(self._connection()), compiled.sql, args)
        try:
            record = cursor.fetchone()
        finally:
            # Resets the statement: one left unfinished would keep its read snapshot open.
            cursor.close()
        return None if record is None else compiled.row(record)

    async def _fetch_all(
        self, compiled: DriverStatement, params: Mapping[str, Any]
    ) -> list[Mapping[str, Any]]:
        return await self._threads.run(self._all_rows, compiled, compiled.args(params))

    def _all_rows(self, compiled: DriverStatement, args: list[Any]) -> list[Mapping[str, Any]]:
        cursor = sqlite_execute(sqlite_driver(self._connection()), compiled.sql, args)
        try:
            records = cursor.fetchall()
        finally:
            cursor.close()
        return [compiled.row(record) for record in records]

    async def execute(
        self, statement: Executable, params: Mapping[str, Any] | None = None
    ) -> Result[Any]:
        if not tracing.recording():
            return await self._threads.run(self._execute, statement, params)
        # The SQL spans of the engine's own connections, made here: the reader thread does not
        # carry the request's trace context.
        text = str(statement)
        operation = text.lstrip().split(None, 1)[0].upper() if text else "SQL"
        attributes = {
            "db.system": "sqlite",
            "db.operation.name": operation,
            "db.query.text": text[:2000],
        }
        with tracing.span(f"sql {operation}", attributes, kind="client"):
            return await self._threads.run(self._execute, statement, params)

    def _connection(self) -> Connection:
        """This reader thread's connection."""
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None or conn.invalidated:
            conn = self._local.conn = self._engine.connect()
            self._connections.append(conn)
        return conn

    def _execute(self, statement: Executable, params: Mapping[str, Any] | None) -> Result[Any]:
        conn = self._connection()
        try:
            return conn.execute(statement, params).freeze()()
        except Exception:
            if conn.invalidated:
                self._local.conn = None
            raise

    async def close(self) -> None:
        threads, self._threads = self._threads, LoopThreads(self.THREADS, "sqlite-reader")
        threads.shutdown(wait=True)
        for conn in self._connections:
            conn.close()
        self._connections.clear()
        self._local = threading.local()
        self._engine.dispose()
