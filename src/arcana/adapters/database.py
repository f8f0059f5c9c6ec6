"""The SQLAlchemy async engine for PostgreSQL (asyncpg) or SQLite (aiosqlite).

With ``ARCANA_DATABASE_DIRECT_URL`` set, ``ARCANA_DATABASE_URL`` is taken to go through PgBouncer
in transaction mode: statements are not cached, and what needs a session (LISTEN) connects to
the direct URL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from arcana.adapters.autocommit_reads import AutocommitReads
from arcana.adapters.driver_statements import OUTAGE_SQLSTATE_CLASSES, OUTAGE_SQLSTATES
from arcana.adapters.fair_pool import FairAsyncQueuePool
from arcana.adapters.group_commit import SqliteGroupCommit
from arcana.adapters.sqlite_reads import SqliteReads
from arcana.config import Settings
from arcana.errors import ArcanaError, ServiceUnavailable, ValidationFailed
from arcana.metrics import DB_UNAVAILABLE

log = logging.getLogger(__name__)


_OUTAGE_ERRORS = {
    "CannotConnectNowError",
    "ConnectionDoesNotExistError",
    "AdminShutdownError",
    "CrashShutdownError",
    "ConnectionFailureError",
    "InterfaceError",
    "TooManyConnectionsError",
}


def is_connectivity_error(exc: BaseException) -> bool:
    """True when the database could not be reached, as opposed to a bad statement."""
    if isinstance(exc, PoolTimeout | ConnectionError | TimeoutError | OSError):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        if isinstance(exc, InterfaceError):
            return True
        if isinstance(exc, OperationalError):
            msg = str(exc.orig).lower() if exc.orig is not None else ""
            # SQLite "database is locked" is contention, not an outage; PostgreSQL
            # shutdown/startup states are outages.
            return "locked" not in msg
        # asyncpg errors reach us wrapped by SQLAlchemy's adapter: look through the chain at
        # the driver's own exception and at the SQLSTATE.
        chain: tuple[BaseException | None, ...] = (exc.orig, getattr(exc.orig, "__cause__", None))
    else:
        chain = (exc,)  # the driver's own, from a statement run on the driver directly
    for err in chain:
        if err is None:
            continue
        if type(err).__name__ in _OUTAGE_ERRORS or isinstance(err, ConnectionError | OSError):
            return True
        state = str(getattr(err, "sqlstate", None) or "")
        if state[:2] in OUTAGE_SQLSTATE_CLASSES or state in OUTAGE_SQLSTATES:
            return True
    return False


# PostgreSQL text cannot hold U+0000 (22021 character_not_in_repertoire; 22P05 untranslatable).
_UNSTORABLE_TEXT_STATES = {"22021", "22P05"}


def is_unstorable_text(exc: BaseException) -> bool:
    """True when PostgreSQL refused a parameter because of a NUL (or unencodable) character:
    bad input that slipped past validation, to be answered 422, never 500."""
    # Wrapped by SQLAlchemy's execution, or the driver's own from a statement run on it
    # directly (``driver_statements``).
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    if orig is None:
        return False
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return state in _UNSTORABLE_TEXT_STATES


def translate_error(exc: BaseException) -> BaseException | None:
    """The service error a database error stands for (``None``: not ours to translate).
    An outage is ``ServiceUnavailable`` (retryable 503); a NUL in text is bad input (422)."""
    if isinstance(exc, ArcanaError):
        return None
    if is_connectivity_error(exc):
        DB_UNAVAILABLE.inc()
        return ServiceUnavailable("The database is unreachable; try again shortly")
    if is_unstorable_text(exc):
        return ValidationFailed("Text must not contain NUL characters")
    return None


def _unique_statement_name() -> str:
    return f"__arcana_{uuid.uuid4().hex}__"


# PgBouncer in transaction mode hands each transaction to any server connection, so a
# prepared statement of one transaction may not exist in the next, and asyncpg's numbered
# names (__asyncpg_stmt_1__) collide between clients sharing a server connection. So: no
# statement caches (asyncpg's and SQLAlchemy's) and a unique name for each statement the
# SQLAlchemy dialect prepares.
_TRANSACTION_POOLER_ARGS: dict[str, Any] = {
    "statement_cache_size": 0,
    "prepared_statement_cache_size": 0,
    "prepared_statement_name_func": _unique_statement_name,
}


_HOLDS_WRITER: ContextVar[bool] = ContextVar("arcana_holds_sqlite_writer", default=False)
"""True while this task holds the SQLite writer lock: a write opened inside it (same task)
does not wait for the lock its own caller holds."""


class Database:
    """Owns the engine and the session factory. Created by the composition root, never at import."""

    def __init__(self, settings: Settings) -> None:
        self.url = settings.database.url.get_secret_value()
        self.is_sqlite = settings.is_sqlite
        direct = settings.database.direct_url
        self.direct_url = direct.get_secret_value() if direct else self.url
        """For what needs a session of its own (LISTEN): never through a transaction pooler."""
        self.pooled = not self.is_sqlite and self.direct_url != self.url
        """``database_url`` goes through PgBouncer in transaction mode (a direct URL is set)."""
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            path = self.url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30}
        else:
            server_settings = {"application_name": "arcana"}
            connect_args: dict[str, Any] = {
                "timeout": settings.database.connect_timeout,
                "command_timeout": max(settings.database.statement_timeout_ms / 1000, 1),
                "server_settings": server_settings,
            }
            if self.pooled:
                connect_args.update(_TRANSACTION_POOLER_ARGS)
            else:
                # A startup parameter; PgBouncer refuses unknown ones (see README: behind it,
                # set statement_timeout on the role instead).
                server_settings["statement_timeout"] = str(settings.database.statement_timeout_ms)
            kwargs.update(
                pool_size=settings.database.pool_size,
                max_overflow=settings.database.max_overflow,
                pool_timeout=settings.database.pool_timeout,
                # Waiting tasks get connections in arrival order, and no connection is closed
                # while tasks wait for one (see fair_pool).
                poolclass=FairAsyncQueuePool,
                # No pre-ping: it is one more round trip on every checkout (a quarter of a
                # GET /auth/me). A connection that died with the server fails its first
                # statement instead; SQLAlchemy then invalidates the whole pool, that request
                # is answered 503 (retryable) and the next ones get fresh connections.
                pool_pre_ping=False,
                pool_recycle=1800,
                connect_args=connect_args,
            )
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        # SQLite has one writer at a time. Writers that meet in SQLite's busy handler sleep
        # and poll (up to 100 ms per sleep), so 64 concurrent requests starve each other
        # into client timeouts; queueing them on one lock in this process hands the write
        # lock over at once and in order. Units of work, the SQL job queue and the audit log
        # take it through ``writing()``.
        self.writer: asyncio.Lock | None = asyncio.Lock() if self.is_sqlite else None
        self.group_commit: SqliteGroupCommit | None = None
        """Batched writes on one connection of their own (a SQLite file only)."""
        self.sqlite_reads: SqliteReads | None = None
        """Read-only units of work in one thread hop per statement (a SQLite file only)."""
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            if self.url.split("///", 1)[-1] not in ("", ":memory:"):
                self.group_commit = SqliteGroupCommit(
                    self.url, self.writing, _HOLDS_WRITER.get, _sqlite_pragmas
                )
                self.sqlite_reads = SqliteReads(self.url, _sqlite_pragmas)
        self.sessionmaker = async_sessionmaker(
            self.engine, expire_on_commit=False, class_=AsyncSession
        )
        # Reads that write nothing. On PostgreSQL the driver wraps every transaction in its
        # own BEGIN and ROLLBACK round trips; in autocommit a lone SELECT is one round trip.
        # Under READ COMMITTED each statement takes its own snapshot anyway, so a read-only
        # unit of work sees what it would have seen inside a transaction. SQLite has its
        # reader threads (above); a transaction pooler (PgBouncer) keeps the ordinary
        # sessions: it could hand a statement's prepare and its execution, when no
        # transaction pins them, to two different server connections.
        self.autocommit_reads: AutocommitReads | None = (
            None if self.is_sqlite or self.pooled else AutocommitReads(self.engine)
        )
        """Read-only units of work on a bare connection in autocommit (PostgreSQL, direct)."""
        self.local_relay = False
        """An outbox relay of this process runs and every commit of this process wakes it
        (``Lifecycle.start_relay``). Until then a PostgreSQL transaction that writes outbox
        rows sends ``NOTIFY arcana_outbox`` too, so that the relay of another process wakes
        (``notifies_outbox``)."""

    @property
    def notifies_outbox(self) -> bool:
        """Whether a transaction that writes outbox rows also notifies other processes.

        Not while this process's own relay runs: that relay is woken in-process by every
        commit and drains until the outbox is empty (when another process's relay holds the
        outbox, it looks again shortly), so a NOTIFY would only cost. And it costs much: a
        transaction that notifies holds a cluster-wide lock from its commit until it ends
        (PostgreSQL serialises its notification queue so), which makes concurrent commits
        flush the WAL one after the other instead of together, and it wakes every listener
        (migration 0008 dropped the trigger that notified on every outbox insert)."""
        return not self.is_sqlite and not self.local_relay

    @contextlib.asynccontextmanager
    async def writing(self) -> AsyncIterator[None]:
        """Hold the SQLite writer lock for the block (re-entrant within a task); no-op on
        PostgreSQL. Keep the block to database work: other writers of this process wait."""
        if self.writer is None or _HOLDS_WRITER.get():
            yield
            return
        async with self.writer:
            token = _HOLDS_WRITER.set(True)
            try:
                yield
            finally:
                _HOLDS_WRITER.reset(token)

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception as exc:
            log.warning("database ping failed: %s", exc)
            return False

    async def dispose(self) -> None:
        if self.group_commit is not None:
            await self.group_commit.close()
        if self.sqlite_reads is not None:
            await self.sqlite_reads.close()
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets readers run beside the single writer; busy_timeout makes writers queue
    # instead of failing with "database is locked".
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
