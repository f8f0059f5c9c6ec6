"""Reads of PostgreSQL on a bare pooled connection in autocommit.

A read-only unit of work runs lone ``SELECT``s: no transaction is needed (under READ COMMITTED
each statement takes its own snapshot anyway), and the ORM session one would open for them
costs more than the statement's own execution (its set-up, the ORM's execution path, the
rollback and close on the way out: about a third of a ``GET /auth/me``'s CPU in profiles).
Here each statement checks a connection out of the pool, runs in autocommit (one round trip,
no ``BEGIN``/``ROLLBACK``) and comes back as a buffered result.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Executable, Result
from sqlalchemy.ext.asyncio import AsyncEngine


class AutocommitReads:
    """Offers the one method repositories call on a session, ``execute``, for read-only units
    of work (see the module doc)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def execute(
        self, statement: Executable, params: Mapping[str, Any] | None = None
    ) -> Result[Any]:
        async with self._engine.connect() as conn:
            result = await conn.execute(statement, params)
            # The rows are fetched already (asyncpg buffers them); freezing detaches them from
            # the connection, which goes back to the pool here.
            return result.freeze()()
