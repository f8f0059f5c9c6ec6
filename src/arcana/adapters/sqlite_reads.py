"""Reads of a SQLite file in one thread hop per statement.

Through aiosqlite every statement of a read costs about six hops between the event loop and
the driver's thread (cursor, execute, fetch, close, the reset of the pooled connection, ...),
and each hop waits for the loop to come round again. Here a read statement runs whole on a
small pool of reader threads, each with a connection of its own, and comes back as a buffered
result: one hop. The connections are in autocommit (no BEGIN): each statement reads the latest
commit (WAL lets readers run beside the writer), as a ``SELECT`` outside a transaction did on
the aiosqlite connections.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import Connection, Engine, Executable, Result, create_engine, event
from sqlalchemy.engine import make_url

from arcana import tracing


class SqliteReads:
    """Offers the one method repositories call on a session, ``execute``, for read-only units
    of work (see the module doc)."""

    THREADS = 2

    def __init__(self, url: str, on_connect: Callable[[Any, Any], None]) -> None:
        self._engine: Engine = create_engine(
            make_url(url).set(drivername="sqlite"),
            connect_args={"timeout": 30, "check_same_thread": False},
            isolation_level="AUTOCOMMIT",
            pool_size=self.THREADS,
        )
        event.listen(self._engine, "connect", on_connect)
        self._executor: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._connections: list[Connection] = []

    async def execute(
        self, statement: Executable, params: Mapping[str, Any] | None = None
    ) -> Result[Any]:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.THREADS, thread_name_prefix="sqlite-reader")
        loop = asyncio.get_running_loop()
        if not tracing.recording():
            return await loop.run_in_executor(self._executor, self._execute, statement, params)
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
            return await loop.run_in_executor(self._executor, self._execute, statement, params)

    def _execute(self, statement: Executable, params: Mapping[str, Any] | None) -> Result[Any]:
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None or conn.invalidated:
            conn = self._local.conn = self._engine.connect()
            self._connections.append(conn)
        try:
            return conn.execute(statement, params).freeze()()
        except Exception:
            if conn.invalidated:
                self._local.conn = None
            raise

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        for conn in self._connections:
            conn.close()
        self._connections.clear()
        self._local = threading.local()
        self._engine.dispose()
