"""Reads of PostgreSQL on a bare pooled connection in autocommit.

A read-only unit of work runs lone ``SELECT``s: no transaction is needed (under READ COMMITTED
each statement takes its own snapshot anyway), and the ORM session one would open for them
costs more than the statement's own execution (its set-up, the ORM's execution path, the
rollback and close on the way out: about a third of a ``GET /auth/me``'s CPU in profiles).
Here each statement checks a connection out of the pool, runs in autocommit (one round trip,
no ``BEGIN``/``ROLLBACK``) and comes back as a buffered result.

``first_row`` goes further for the hottest reads (the bearer's user on every ``GET /auth/me``,
a login's look-up): the statement runs on the driver's own connection, with no SQLAlchemy
execution at all (``adapters/driver_statements.py``), and the runs of one statement that arrive
together go to PostgreSQL together, in one round trip (``adapters/statement_batches.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Executable, Result
from sqlalchemy.ext.asyncio import AsyncEngine

from arcana import tracing
from arcana.adapters.driver_statements import (
    DriverStatement,
    FirstRowReads,
    fetch_row,
    fetch_rows,
)
from arcana.adapters.statement_batches import BATCH_KEY_COLUMN, StatementBatches


class AutocommitReads(FirstRowReads):
    """Offers what repositories call on a session in a read-only unit of work, ``execute``,
    and ``first_row`` for the reads that use it (see the module doc)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        super().__init__(self._engine.dialect)
        self._batches: dict[Any, StatementBatches] = {}
        """Statement → its batches (keyed by the statement itself, as ``_compiled``)."""

    async def first_row(
        self, statement: Any, params: Mapping[str, Any]
    ) -> Mapping[str, Any] | None:
        if tracing.recording():  # SQLAlchemy's execution makes the statement's span
            return await super().first_row(statement, params)
        batches = self._batches.get(statement)
        if batches is None:
            batched = DriverStatement(statement.add_columns(BATCH_KEY_COLUMN), self._dialect)
            alone = self._compiled_form(statement)
            batches = self._batches[statement] = StatementBatches(self._engine, alone, batched)
        return await batches.first_row(params)

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
