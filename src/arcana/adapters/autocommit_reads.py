"""Reads of PostgreSQL on a bare pooled connection in autocommit.

A read-only unit of work runs lone ``SELECT``s: no transaction is needed (under READ COMMITTED
each statement takes its own snapshot anyway), and the ORM session one would open for them
costs more than the statement's own execution (its set-up, the ORM's execution path, the
rollback and close on the way out: about a third of a ``GET /auth/me``'s CPU in profiles).
Here each statement checks a connection out of the pool, runs in autocommit (one round trip,
no ``BEGIN``/``ROLLBACK``) and comes back as a buffered result.

``first_row`` goes one step further for the hottest reads (the bearer's user on every
``GET /auth/me``): the statement runs on the driver's own connection, with no SQLAlchemy
execution at all (``adapters/driver_statements.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Executable, Result
from sqlalchemy.ext.asyncio import AsyncEngine

from arcana.adapters.driver_statements import (
    DriverStatement,
    FirstRowReads,
    fetch_row,
    fetch_rows,
)


class AutocommitReads(FirstRowReads):
    """Offers what repositories call on a session in a read-only unit of work, ``execute``,
    and ``first_row`` for the reads that use it (see the module doc)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        super().__init__(self._engine.dialect)

    async def execute(
        self, statement: Executable, params: Mapping[str, Any] | None = None
    ) -> Result[Any]:
        async with self._engine.connect() as conn:
            result = await conn.execute(statement, params)
            # The rows are fetched already (asyncpg buffers them); freezing detaches them from
            # the connection, which goes back to the pool here.
            return result.freeze()()

    async def _fetch_first(
        self, compiled: DriverStatement, params: Mapping[str, Any]
    ) -> Mapping[str, Any] | None:
        return await fetch_row(self._engine, compiled, params)

    async def _fetch_all(
        self, compiled: DriverStatement, params: Mapping[str, Any]
    ) -> list[Mapping[str, Any]]:
        return await fetch_rows(self._engine, compiled, params)
