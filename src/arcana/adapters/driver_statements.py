"""Core statements compiled once and run on the driver directly: asyncpg for PostgreSQL, the
sqlite3 module for a SQLite file (on its reader and writer threads).

For the hottest statements — the quiet stock change, the bearer's user on every
``GET /auth/me`` — SQLAlchemy's execution (a ``Connection`` and its events, the compiled-cache
look-up, parameter and result processing, greenlet hops for connect, execute and close) cost
more than the rest of the request: on ``arcana serve`` under load, ``/auth/me`` went from about
600 µs of server CPU per request to about 250 µs without it, and a stock change from 1.51 M to
0.85 M instructions (``bench/stock.py --callgrind``). Here the SQL text, the parameter order
and the types' own bind and result processors come from the same compiled statement, so the
values on the wire and the row read back are what ``execute`` would give; asyncpg's statement
cache prepares it once per connection, and the connection comes from (and goes back to) the
engine's own pool, whose size, fairness and timeout hold as for every other statement.

On SQLite the same holds for a login's user look-up and its session insert: SQLAlchemy's
execution of the two inserts, with ``BEGIN`` and the savepoint, cost the writer thread about
0.4 ms per login, the driver's own statements about 0.1 ms (``bench/login.py``, per thread).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, cast

import asyncpg
from sqlalchemy import Connection, Executable, Result
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from arcana import tracing


def _typed(type_: Any, dialect: Any) -> Any:
    """The type whose processors SQLAlchemy's execution applies to a value of ``type_``.
    sqlite3 takes and gives timestamps as text, which the SQLite dialect's own types convert
    (``dialect_impl``: its DATETIME writes and parses SQLAlchemy's text form). asyncpg converts
    values itself; there the declared type is used (its own ``process_bind_param`` and
    ``process_result_value``), since the dialect's numeric type builds its result processor
    from the column's type code, which only a result carries."""
    return type_.dialect_impl(dialect) if dialect.name == "sqlite" else type_


class DriverStatement:
    """One statement's compiled form (see the module doc). ``columns``: those of the rows it
    returns (default: the statement's selected columns)."""

    def __init__(self, statement: Any, dialect: Any, columns: Iterable[Any] | None = None) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql: str = compiled.string
        binds = [compiled.binds[name] for name in compiled.positiontup or ()]
        # (name, the value bound in the statement itself, the type's bind processor)
        self._params = [
            (b.key, b.value, _typed(b.type, dialect).bind_processor(dialect)) for b in binds
        ]
        if columns is None:
            columns = statement.selected_columns
        # (position, name, the type's result processor): a row is read by position, which
        # an asyncpg record and a sqlite3 tuple both offer.
        self._columns = [
            (i, c.key, _typed(c.type, dialect).result_processor(dialect, None))
            for i, c in enumerate(columns)
        ]

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        out: list[Any] = []
        for name, fixed, process in self._params:
            value = params.get(name, fixed)
            out.append(value if process is None else process(value))
        return out

    def row(self, record: Any) -> Mapping[str, Any]:
        return {
            key: record[i] if process is None else process(record[i])
            for i, key, process in self._columns
        }


class FirstRowReads:
    """``first_row`` of a read-only unit of work's stand-in for a session (``AutocommitReads``
    on PostgreSQL, ``SqliteReads`` on a SQLite file): the first row of a statement built once,
    as a mapping of column names (``None``: no row), run on the driver with the statement's
    compiled form (``_fetch_first``), unless a trace is sampled (``execute``, SQLAlchemy's
    execution, then makes the statement's span)."""

    def __init__(self, dialect: Any) -> None:
        self._dialect = dialect
        self._compiled: dict[Any, DriverStatement] = {}
        """Statement → its compiled form. Keyed by the statement object itself (identity
        hash): it stays referenced here, so no later statement can take its place, as one
        could take a collected statement's ``id()``."""

    async def execute(
        self, statement: Executable, params: Mapping[str, Any] | None = None
    ) -> Result[Any]:
        raise NotImplementedError

    async def _fetch_first(
        self, compiled: DriverStatement, params: Mapping[str, Any]
    ) -> Mapping[str, Any] | None:
        raise NotImplementedError

    async def _fetch_all(
        self, compiled: DriverStatement, params: Mapping[str, Any]
    ) -> list[Mapping[str, Any]]:
        raise NotImplementedError

    def _compiled_form(self, statement: Any) -> DriverStatement:
        compiled = self._compiled.get(statement)
        if compiled is None:
            compiled = DriverStatement(statement, self._dialect)
            self._compiled[statement] = compiled
        return compiled

    async def first_row(
        self, statement: Any, params: Mapping[str, Any]
    ) -> Mapping[str, Any] | None:
        """``statement`` must be built once (a module-level constant): each one's compiled
        form is kept."""
        if tracing.recording():
            row = (await self.execute(statement, params)).mappings().first()
            return cast(Mapping[str, Any] | None, row)
        return await self._fetch_first(self._compiled_form(statement), params)

    async def all_rows(self, statement: Any, params: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        """Every row, as ``first_row`` reads the first (the same rule on ``statement``): a
        list page built after a write, where SQLAlchemy's execution cost more than the
        statement (``bench/RESULTS.md``)."""
        if tracing.recording():
            rows = (await self.execute(statement, params)).mappings().all()
            return cast(list[Mapping[str, Any]], rows)
        return await self._fetch_all(self._compiled_form(statement), params)


async def fetch_row(
    engine: AsyncEngine, statement: DriverStatement, params: Mapping[str, Any]
) -> Mapping[str, Any] | None:
    """The statement's first row (``None``: no row), alone on a pooled connection, outside any
    transaction: asyncpg runs it in autocommit (SQLAlchemy's adapter starts no transaction it
    was not asked for, so the connection goes back to the pool with nothing to roll back).
    Not behind a transaction pooler (PgBouncer): a statement's prepare and its execution could
    reach two different server connections."""
    async with pooled_driver(engine) as driver:
        record = await driver.fetchrow(statement.sql, *statement.args(params))
    return statement.row(record) if record is not None else None


async def fetch_rows(
    engine: AsyncEngine, statement: DriverStatement, params: Mapping[str, Any]
) -> list[Mapping[str, Any]]:
    """Every row of the statement, run as ``fetch_row`` runs it."""
    async with pooled_driver(engine) as driver:
        records = await driver.fetch(statement.sql, *statement.args(params))
    return [statement.row(record) for record in records]


async def execute_count(
    engine: AsyncEngine, statement: DriverStatement, params: Mapping[str, Any]
) -> int:
    """The rows a write statement changed (its command tag's count), run as ``fetch_row``
    runs a read: alone on a pooled connection, in autocommit, so the statement is its own
    transaction and is committed when this returns."""
    async with pooled_driver(engine) as driver:
        tag: str = await driver.execute(statement.sql, *statement.args(params))
    return int(tag.rsplit(" ", 1)[-1])


OUTAGE_SQLSTATE_CLASSES = frozenset({"08"})
"""Connection exception: the session is gone (or never was)."""
OUTAGE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})
"""Admin or crash shutdown, cannot connect now (the server stops or starts), too many
connections."""


def session_gone(exc: BaseException) -> bool:
    """True when a statement failed because the connection's server session is gone, not
    because of the statement. The driver's own (client-side) errors say so, and so do the
    server's connection-class errors: asyncpg raises ``ConnectionDoesNotExistError`` (SQLSTATE
    08003, a ``PostgresError``) when the server's goodbye is read as the answer to a
    statement, because the event loop had not read it while the connection sat idle."""
    if not isinstance(exc, asyncpg.PostgresError):
        return True
    state = str(exc.sqlstate or "")
    return state[:2] in OUTAGE_SQLSTATE_CLASSES or state in OUTAGE_SQLSTATES


@contextlib.asynccontextmanager
async def pooled_driver(engine: AsyncEngine) -> AsyncIterator[Any]:
    """asyncpg's connection of a connection checked out of the engine's pool for the block."""
    raw = await engine.raw_connection()
    try:
        yield raw.driver_connection
    except Exception as exc:
        # The connection's state after a failed statement is unknown: it is closed rather
        # than handed to the next request.
        raw.invalidate(exc)
        if session_gone(exc):
            # A session the server ended while the connection sat in the pool: an outage,
            # as SQLAlchemy's execution would take it (``translate_error`` answers 503). As
            # SQLAlchemy's execution
            # does on a disconnect (``Connection._handle_dbapi_exception``), every connection
            # the pool opened before this one is taken as dead too and opened again when next
            # checked out: after a server restart one request answers 503, not one per
            # pooled connection. (``Pool._invalidate`` is SQLAlchemy's own call for this.)
            engine.sync_engine.pool._invalidate(raw, exc)
            raise ConnectionError(f"database connection unusable: {exc!r}") from exc
        raise
    except BaseException:  # cancelled mid-statement: the same
        raw.invalidate()
        raise
    finally:
        raw.close()


def sqlite_driver(conn: Connection) -> sqlite3.Connection:
    """The sqlite3 connection under a (synchronous) SQLAlchemy one."""
    driver = conn.connection.driver_connection
    assert isinstance(driver, sqlite3.Connection)
    return driver


def sqlite_execute(
    driver: sqlite3.Connection, sql: str, args: Sequence[Any] = ()
) -> sqlite3.Cursor:
    """``sql`` on a sqlite3 connection, its errors wrapped as SQLAlchemy's execution wraps
    them, so that ``translate_error`` and the callers read them alike (an I/O error is an
    outage, 503; a constraint is an ``IntegrityError``)."""
    try:
        return driver.execute(sql, args)
    except sqlite3.Error as exc:
        raise DBAPIError.instance(sql, list(args), exc, sqlite3.Error) from exc
