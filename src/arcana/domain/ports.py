"""Ports shared by every area. Area-specific repositories live beside their models.

Adapters implement these; services depend only on them.
"""

from __future__ import annotations

from datetime import datetime
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from arcana.domain.events import DomainEvent
from arcana.domain.jobs import JobRequest
from arcana.domain.timestamps import utcnow


class Clock(Protocol):
    """Where services read the time, so tests can move it by hand instead of sleeping or
    rewriting stored rows."""

    def now(self) -> datetime:
        """The current instant, timezone-aware in UTC."""
        ...


class SystemClock:
    """The real clock, the default of every service that takes a ``Clock``."""

    def now(self) -> datetime:
        return utcnow()


class Cache(Protocol):
    """A byte cache. Every method degrades to a miss / no-op when the backend is down:
    a cache outage must never become an error response."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: int) -> None: ...

    async def add(self, key: str, value: bytes, ttl: int) -> bool:
        """Set only if absent; True when it was set."""
        ...

    async def delete(self, *keys: str) -> None: ...

    async def ping(self) -> bool: ...


@runtime_checkable
class LocalCache(Cache, Protocol):
    """A cache in this process's memory, which can also answer a read without awaiting (the
    embedded mode's). A hot read path takes ``get_now`` to skip a coroutine per look-up."""

    def get_now(self, key: str) -> bytes | None: ...


class UnitOfWork(Protocol):
    """One database transaction. Rolls back unless ``commit()`` was called.

    Events recorded with ``record()`` are written to the outbox by ``commit()``, in the same
    transaction as the change; nothing is published before the commit succeeds.
    """

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def record(self, *events: DomainEvent) -> None: ...

    def enqueue(self, *jobs: JobRequest) -> None:
        """Queue jobs through the outbox: they exist only if this transaction commits."""
        ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...


class UnitOfWorkFactory(Protocol):
    def __call__(self) -> UnitOfWork: ...
