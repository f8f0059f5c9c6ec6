"""SQL unit of work: one session and transaction, repositories bound to it, outbox on commit."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Self, cast

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from arcana import tracing
from arcana.adapters.database import Database, translate_error
from arcana.adapters.outbox_rows import NOTIFY_RELAYS, outbox_rows
from arcana.adapters.product_repositories import SqlProductRepository
from arcana.adapters.tables import outbox
from arcana.adapters.user_repositories import (
    SqlResetTokenRepository,
    SqlSessionRepository,
    SqlUserRepository,
)
from arcana.domain.events import DomainEvent
from arcana.domain.jobs import JobRequest


class SqlUnitOfWork:
    """Rolls back unless committed. Database outages surface as ``ServiceUnavailable``.

    Area repositories are bound in ``_bind`` so a service reaches them as ``uow.users``,
    ``uow.products``, … without ever seeing the session.
    """

    _session: AsyncSession | None = None

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
        self._events = []
        self._jobs = []
        self._written = []
        self._wrote = False
        self._committed = False
        reads = (self._db.sqlite_reads or self._db.autocommit_reads) if self._read_only else None
        if reads is not None:
            # Repositories only call ``execute`` in a read-only unit of work, which a SQLite
            # file's reader threads (one hop per statement) and PostgreSQL's autocommit
            # connections offer without a session: nothing to roll back or close.
            self._session = None
            self._bind(cast(AsyncSession, reads))
            return self
        self._session = self._db.sessionmaker()
        self._bind(self._session)
        return self

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            raise RuntimeError("a read-only unit of work has no session")
        return self._session

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session, self._session = self._session, None
        try:
            if session is not None and not self._committed:
                await session.rollback()
        except Exception:  # the connection may be gone; closing below frees it
            pass
        finally:
            try:
                if session is not None:
                    await session.close()
            finally:
                writing, self._writing = self._writing, None
                if writing is not None:
                    await writing.__aexit__(None, None, None)
        if exc is not None:
            translated = translate_error(exc)
            if translated is not None:
                raise translated from exc

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
        rows = outbox_rows(self._events, self._jobs, tracing.current_traceparent())
        if rows:
            await self.session.execute(insert(outbox), rows)
        return bool(rows)

    async def commit(self) -> None:
        if self._read_only:
            raise RuntimeError("a read-only unit of work cannot commit")
        wrote = await self._insert_recorded() or self._wrote
        if wrote and self._db.notifies_outbox:
            await self.session.execute(NOTIFY_RELAYS)
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
