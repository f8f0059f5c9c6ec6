"""Reads of PostgreSQL on a bare pooled connection in autocommit.

A read-only unit of work runs lone ``SELECT``s: no transaction is needed (under READ COMMITTED
each statement takes its own snapshot anyway), and the ORM session one would open for them
costs more than the statement's own execution (its set-up, the ORM's execution path, the
rollback and close on the way out: about a third of a ``GET /auth/me``'s CPU in profiles).
Here each statement checks a connection out of the pool, runs in autocommit (one round trip,
no ``BEGIN``/``ROLLBACK``) and comes back as a buffered result.

``first_row`` goes one step further for the hottest reads (the bearer's user on every
``GET /auth/me``): the statement, compiled once, runs on the driver's own connection (asyncpg's
``fetchrow``, its prepared-statement cache), with no SQLAlchemy execution at all. On
``arcana serve`` under load that took ``/auth/me``'s server CPU per request from about 600 µs
to about 200 µs (SQLAlchemy's async execution — greenlet switches, execution context, result
processing — cost twice the rest of the request). Only for statements whose columns need no
result processing by SQLAlchemy's types (text, integers, booleans, ``timestamptz``, which
asyncpg already returns as aware datetimes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Executable, Result
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.util import greenlet_spawn

from arcana import tracing


class AutocommitReads:
    """Offers the one method repositories call on a session, ``execute``, for read-only units
    of work (see the module doc)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._compiled: dict[int, tuple[str, tuple[str, ...], dict[str, Any]]] = {}
        """Statement (by identity: module-level constants) → ``_compile``'s result."""

    async def execute(
        self, statement: Executable, params: Mapping[str, Any] | None = None
    ) -> Result[Any]:
        async with self._engine.connect() as conn:
            result = await conn.execute(statement, params)
            # The rows are fetched already (asyncpg buffers them); freezing detaches them from
            # the connection, which goes back to the pool here.
            return result.freeze()()

    async def first_row(
        self, statement: ClauseElement, params: Mapping[str, Any]
    ) -> Mapping[str, Any] | None:
        """The first row of ``statement`` as a mapping of column names (``None``: no row), run
        on the driver's connection (see the module doc). ``statement`` must be built once
        (compiled forms are kept by identity). Errors propagate as the driver's; the unit of
        work translates an outage into ``ServiceUnavailable``."""
        compiled = self._compiled.get(id(statement))
        if compiled is None:
            compiled = self._compiled[id(statement)] = self._compile(statement)
        sql, names, fixed = compiled
        args = [params[name] if name in params else fixed[name] for name in names]
        # Checked out (and returned) through the engine's pool: the pool's size, fairness and
        # timeout hold as for every other statement.
        conn = await self._engine.raw_connection()
        driver = conn.driver_connection
        assert driver is not None  # a checked-out connection has one
        try:
            if tracing.recording():
                attributes = {
                    "db.system": "postgresql",
                    "db.operation.name": "SELECT",
                    "db.query.text": sql[:2000],
                }
                with tracing.span("sql SELECT", attributes, kind="client"):
                    row = await driver.fetchrow(sql, *args)
            else:
                row = await driver.fetchrow(sql, *args)
        except BaseException as exc:
            # Whatever happened (an outage, a cancelled wait mid-statement), the connection's
            # state is unknown: it leaves the pool (closing it may await: in a greenlet).
            await greenlet_spawn(conn.invalidate, exc if isinstance(exc, Exception) else None)
            raise
        finally:
            # No transaction was opened through the pool's wrapper, so checking in (a rollback
            # only of a transaction the wrapper began) awaits nothing.
            conn.close()
        return row  # type: ignore[no-any-return]

    def _compile(self, statement: ClauseElement) -> tuple[str, tuple[str, ...], dict[str, Any]]:
        """SQL text, parameter names in order ($1, $2, ...) and the values bound in the
        statement itself (``literal()``). Refuses a parameter whose type would process its
        value on the way in: here nothing would."""
        dialect = self._engine.dialect
        form = statement.compile(dialect=dialect)
        assert isinstance(form, SQLCompiler)
        names = tuple(form.positiontup or ())
        fixed: dict[str, Any] = {}
        for name in names:
            bind = form.binds[name]
            if bind.type._cached_bind_processor(dialect) is not None:
                raise ValueError(f"parameter {name!r} needs its type's processing")
            if not bind.required:
                fixed[name] = bind.effective_value
        return form.string, names, fixed
