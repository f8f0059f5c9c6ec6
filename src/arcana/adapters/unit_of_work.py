"""SQL unit of work: one session and transaction, repositories bound to it, outbox on commit."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Self

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from arcana import tracing
from arcana.adapters.database import Database, is_connectivity_error, is_unstorable_text
from arcana.adapters.product_repositories import SqlProductRepository
from arcana.adapters.tables import outbox
from arcana.adapters.user_repositories import (
    SqlResetTokenRepository,
    SqlSessionRepository,
    SqlUserRepository,
)
from arcana.domain.events import DomainEvent
from arcana.domain.jobs import JobRequest
from arcana.domain.timestamps import utcnow
from arcana.errors import ArcanaError, ServiceUnavailable, ValidationFailed
from arcana.metrics import DB_UNAVAILABLE


class SqlUnitOfWork:
    """Rolls back unless committed. Database outages surface as ``ServiceUnavailable``.

    Area repositories are bound in ``_bind`` so a service reaches them as ``uow.users``,
    ``uow.products``, … without ever seeing the session.
    """

    session: AsyncSession

    def __init__(
        self,
        db: Database,
        after_commit: Callable[[list[DomainEvent]], None] | None = None,
        *,
        read_only: bool = False,
    ) -> None:
        self._db = db
        self._after_commit = after_commit
        self._read_only = read_only
        self._writing: AbstractAsyncContextManager[None] | None = None
        self._events: list[DomainEvent] = []
        self._jobs: list[JobRequest] = []
        self._written: list[DomainEvent] = []  # recorded events already in the outbox
        self._wrote = False
        self._committed = False

    def _bind(self, session: AsyncSession) -> None:
        """Attach repositories. Each area adds its own line here."""
        self.users = SqlUserRepository(session)
        self.sessions = SqlSessionRepository(session)
        self.reset_tokens = SqlResetTokenRepository(session)
        self.products = SqlProductRepository(session)

    async def __aenter__(self) -> Self:
        if not self._read_only:
            # SQLite: one writing unit of work at a time in this process (see Database).
            self._writing = self._db.writing()
            await self._writing.__aenter__()
        self.session = (self._db.read_sessionmaker if self._read_only else self._db.sessionmaker)()
        self._events = []
        self._jobs = []
        self._written = []
        self._wrote = False
        self._committed = False
        self._bind(self.session)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if not self._committed:
                await self.session.rollback()
        except Exception:  # the connection may be gone; closing below frees it
            pass
        finally:
            try:
                await self.session.close()
            finally:
                writing, self._writing = self._writing, None
                if writing is not None:
                    await writing.__aexit__(None, None, None)
        if exc is not None and not isinstance(exc, ArcanaError):
            if is_connectivity_error(exc):
                DB_UNAVAILABLE.inc()
                raise ServiceUnavailable("The database is unreachable; try again shortly") from exc
            if is_unstorable_text(exc):
                raise ValidationFailed(
                    "Text must not contain NUL characters",
                    errors=[{"loc": ["body"], "msg": "contains NUL", "type": "value_error"}],
                ) from exc

    def record(self, *events: DomainEvent) -> None:
        self._events.extend(events)

    def enqueue(self, *jobs: JobRequest) -> None:
        self._jobs.extend(jobs)

    async def write_recorded(self) -> None:
        """Insert the outbox rows of what was recorded so far now, in this transaction."""
        if self._read_only:
            raise RuntimeError("a read-only unit of work cannot write")
        if await self._insert_recorded():
            self._written.extend(self._events)
            self._wrote = True
        self._events, self._jobs = [], []

    async def _insert_recorded(self) -> bool:
        # The work these rows cause continues the current trace (None when tracing is off).
        trace_context = tracing.current_traceparent()
        rows = [
            {
                "id": e.id,
                "kind": "event",
                "event_type": e.event_type,
                "aggregate_id": e.aggregate_id,
                "data": e.envelope(),
                "created_at": e.timestamp,
                "trace_context": trace_context,
            }
            for e in self._events
        ]
        now = utcnow()
        rows += [
            {
                "id": str(uuid.uuid4()),
                "kind": "job",
                "event_type": j.job_type,
                "aggregate_id": None,
                "data": j.to_dict(),
                "created_at": now,
                "trace_context": trace_context,
            }
            for j in self._jobs
        ]
        if rows:
            await self.session.execute(insert(outbox), rows)
        return bool(rows)

    async def commit(self) -> None:
        if self._read_only:
            raise RuntimeError("a read-only unit of work cannot commit")
        wrote = await self._insert_recorded() or self._wrote
        await self.session.commit()
        self._committed = True
        events = [*self._written, *self._events]
        self._events, self._jobs, self._written, self._wrote = [], [], [], False
        if wrote and self._after_commit is not None:
            self._after_commit(events)

    async def rollback(self) -> None:
        await self.session.rollback()
        self._events = []
        self._jobs = []
        self._written, self._wrote = [], False
